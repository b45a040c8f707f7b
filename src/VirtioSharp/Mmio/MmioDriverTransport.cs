using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Machine;
using VirtioSharp.Memory;
using R = VirtioSharp.Mmio.MmioRegisters;

namespace VirtioSharp.Mmio;

/// <summary>
/// The driver side of virtio-mmio (4.2.3): everything through 32-bit register loads and stores
/// on the bus, plus guest RAM. Its interrupt service routine reads InterruptStatus, acknowledges
/// it and hands used buffers to the driver.
/// </summary>
public sealed class MmioDriverTransport : IDriverTransport
{
    private readonly MmioBus _bus;
    private readonly ulong _base;
    private readonly InterruptLine _irq;
    private IInterruptHandler? _handler;

    public MmioDriverTransport(MmioBus bus, ulong baseAddress, GuestMemory memory, GuestAllocator allocator, InterruptLine irq, ITraceSink? trace = null)
    {
        _bus = bus;
        _base = baseAddress;
        _irq = irq;
        Memory = memory;
        Allocator = allocator;
        Trace = trace;
        // 4.2.3.1: check magic and version before anything else.
        var magic = Read(R.MagicValue);
        if (magic != R.Magic)
            throw new VirtioDeviceException($"no virtio-mmio device at 0x{baseAddress:x}: MagicValue is 0x{magic:x8}");
        var version = Read(R.Version);
        if (version != R.CurrentVersion)
            throw new VirtioDeviceException($"virtio-mmio version {version} at 0x{baseAddress:x}; this driver speaks version 2");
        irq.SetHandler(ServiceInterrupt);
    }

    public GuestMemory Memory { get; }
    public GuestAllocator Allocator { get; }
    public ITraceSink? Trace { get; }
    public uint DeviceId => Read(R.DeviceId);
    public uint ConfigGeneration => Read(R.ConfigGeneration);

    private uint Read(uint register) => _bus.Read(_base + register);
    private void Write(uint register, uint value) => _bus.Write(_base + register, value);

    public void Reset()
    {
        Write(R.Status, 0);
        // 4.2.3.1 / 2.4.1: reset is done when Status reads back 0.
        while (Read(R.Status) != 0)
            Thread.Yield();
    }

    public DeviceStatus GetStatus() => (DeviceStatus)Read(R.Status);
    public void SetStatus(DeviceStatus status) => Write(R.Status, (uint)status);

    public ulong GetDeviceFeatures()
    {
        Write(R.DeviceFeaturesSel, 0);
        var low = Read(R.DeviceFeatures);
        Write(R.DeviceFeaturesSel, 1);
        var high = Read(R.DeviceFeatures);
        return low | ((ulong)high << 32);
    }

    public void SetDriverFeatures(ulong features)
    {
        // Both windows, every time: dropping one loses bits such as FLUSH or VERSION_1.
        Write(R.DriverFeaturesSel, 0);
        Write(R.DriverFeatures, (uint)features);
        Write(R.DriverFeaturesSel, 1);
        Write(R.DriverFeatures, (uint)(features >> 32));
    }

    public int GetMaxQueueSize(int queue)
    {
        Write(R.QueueSel, (uint)queue);
        if (Read(R.QueueReady) != 0)
            throw new VirtioDeviceException($"queue {queue} is already live"); // 4.2.3.2 step 2
        return (int)Read(R.QueueNumMax);
    }

    public void SetupQueue(int queue, int size, ulong descriptorTable, ulong driverArea, ulong deviceArea)
    {
        // 4.2.3.2: select, size, the three areas, then QueueReady = 1.
        Write(R.QueueSel, (uint)queue);
        Write(R.QueueNum, (uint)size);
        Write(R.QueueDescLow, (uint)descriptorTable);
        Write(R.QueueDescHigh, (uint)(descriptorTable >> 32));
        Write(R.QueueDriverLow, (uint)driverArea);
        Write(R.QueueDriverHigh, (uint)(driverArea >> 32));
        Write(R.QueueDeviceLow, (uint)deviceArea);
        Write(R.QueueDeviceHigh, (uint)(deviceArea >> 32));
        Write(R.QueueReady, 1);
        if (Read(R.QueueReady) != 1)
            throw new VirtioDeviceException($"device refused queue {queue} (size {size})");
    }

    public void Notify(int queue)
    {
        Write(R.QueueNotify, (uint)queue); // 4.2.3.3
    }

    public void ReadConfig(int offset, Span<byte> destination)
    {
        // Config fields read 32 bits at a time (4.2.2.2 allows narrower for narrower fields).
        Span<byte> word = stackalloc byte[4];
        for (var i = 0; i < destination.Length; i += 4)
        {
            BitConverter.TryWriteBytes(word, _bus.Read(_base + R.Config + (ulong)(offset + i), 4));
            word[..Math.Min(4, destination.Length - i)].CopyTo(destination[i..]);
        }
    }

    public void SetInterruptHandler(IInterruptHandler handler) => _handler = handler;

    /// <summary>The interrupt service routine (4.2.3.4), run on the interrupt line's thread.</summary>
    private void ServiceInterrupt()
    {
        var status = Read(R.InterruptStatus);
        if (status == 0)
            return;
        Write(R.InterruptAck, status); // the bus records both accesses when someone records
        if ((status & R.InterruptConfigChange) != 0)
            _handler?.OnConfigChange();
        if ((status & R.InterruptUsedBuffer) != 0)
            _handler?.OnUsedBuffers(-1);
    }

    public void Dispose() => _irq.SetHandler(static () => { });
}
