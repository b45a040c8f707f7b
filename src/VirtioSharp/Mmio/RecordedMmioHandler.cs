using VirtioSharp.Diagnostics;
using R = VirtioSharp.Mmio.MmioRegisters;

namespace VirtioSharp.Mmio;

/// <summary>
/// Sits between the bus and a virtio-mmio device and reports every register load and store as a
/// <see cref="RingEvent"/> while the sink is active. Mapped only when someone records.
/// </summary>
public sealed class RecordedMmioHandler(IMmioHandler inner, ulong baseAddress, ITraceSink sink) : IMmioHandler
{
    public uint Size => inner.Size;

    public uint Read(uint offset, int width)
    {
        var value = inner.Read(offset, width);
        if (sink.Active)
            sink.Event(Describe(offset, value, write: false));
        return value;
    }

    public void Write(uint offset, uint value, int width)
    {
        // A store is reported before the device acts on it: a QueueNotify comes before the work it starts.
        if (sink.Active)
            sink.Event(Describe(offset, value, write: true));
        inner.Write(offset, value, width);
    }

    private RingEvent Describe(uint offset, uint value, bool write)
    {
        var (section, words) = Rule(offset, write);
        return RingEvents.Register(baseAddress + offset, offset, R.Name(offset), value, write, words, section);
    }

    /// <summary>The section and rule behind each register, in a few words.</summary>
    private static (string Section, string Words) Rule(uint offset, bool write) => offset switch
    {
        R.MagicValue or R.Version or R.DeviceId or R.VendorId =>
            ("4.2.3.1", "Before anything else the driver checks the magic value \"virt\", version 2 and the device ID (2 = block)."),
        R.Status => ("3.1.1", "Initialization walks the status register through ACKNOWLEDGE, DRIVER, FEATURES_OK and DRIVER_OK; writing 0 resets the device."),
        R.DeviceFeatures or R.DeviceFeaturesSel or R.DriverFeatures or R.DriverFeaturesSel =>
            ("3.1.1", "Features are read and written 32 bits at a time through a window chosen by the Sel register; the driver accepts a subset of what the device offers."),
        R.QueueSel or R.QueueNumMax or R.QueueNum or R.QueueReady or R.QueueDescLow or R.QueueDescHigh
            or R.QueueDriverLow or R.QueueDriverHigh or R.QueueDeviceLow or R.QueueDeviceHigh =>
            ("4.2.3.2", "To set up a queue the driver selects it, checks its maximum size, writes the size and the three areas' guest addresses, then sets QueueReady."),
        R.QueueNotify => ("4.2.3.3", "Writing a queue's index to QueueNotify tells the device there are new available buffers in that queue."),
        R.InterruptStatus => ("4.2.3.4", "The interrupt handler reads InterruptStatus: bit 0 means used buffers, bit 1 a configuration change."),
        R.InterruptAck => ("4.2.3.4", "Writing the bits it handled to InterruptACK lowers the device's interrupt."),
        R.ConfigGeneration => ("4.2.2", "ConfigGeneration changes when the device changes its configuration space, so a driver can read it consistently."),
        >= R.Config => ("5.2.4", "The block device's configuration space: capacity in 512-byte sectors, limits on segments and sizes, block size."),
        _ => ("4.2.2", write ? "A store to a virtio-mmio register." : "A load from a virtio-mmio register."),
    };
}
