using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Mmio;

namespace VirtioSharp.Machine;

/// <summary>
/// The simulated machine: guest RAM, an MMIO bus with one virtio-mmio device at 0x10001000
/// (where QEMU's riscv virt board puts its first one), an I/O thread per queue and an interrupt line
/// whose thread runs the driver's interrupt handler.
/// </summary>
public sealed class VirtioMachine : IDisposable
{
    public const ulong RamBase = 0x8000_0000;
    public const ulong MmioBase = 0x1000_1000;

    public VirtioMachine(IVirtioDevice device, ulong ramSize, ITraceSink? trace = null)
    {
        Ram = new GuestRam(RamBase, ramSize);
        Bus = new MmioBus();
        Device = new VirtioMmioDevice(device, Ram.Memory) { Trace = trace };
        // Recorded runs see every register access on the bus (4.2.2); others map the device bare.
        Bus.Map(MmioBase, trace is null ? Device : new RecordedMmioHandler(Device, MmioBase, trace));
        Irq = new InterruptLine("virtio-irq");
        Device.InterruptRaised = Irq.Raise;
        IoThreads = new DeviceThread[device.NumQueues];
        for (var q = 0; q < IoThreads.Length; q++)
            IoThreads[q] = new DeviceThread(Device, q, $"virtio-io-q{q}");
        Device.QueueNotified = q => IoThreads[q].Kick();
        Trace = trace;
    }

    public GuestRam Ram { get; }
    public MmioBus Bus { get; }
    public VirtioMmioDevice Device { get; }
    public InterruptLine Irq { get; }
    /// <summary>One I/O thread per queue.</summary>
    public DeviceThread[] IoThreads { get; }
    public long IoWakeups => IoThreads.Sum(t => t.Wakeups);
    public ITraceSink? Trace { get; }

    /// <summary>A driver-side transport for the device, with an allocator over all of guest RAM.</summary>
    public MmioDriverTransport CreateDriverTransport() =>
        new(Bus, MmioBase, Ram.Memory, new GuestAllocator(Ram.Memory, Ram.Base, Ram.Size), Irq, Trace);

    /// <summary>Guest RAM a driver needs for a queue of <paramref name="queueSize"/> at <paramref name="transferSize"/> bytes per request.</summary>
    public static ulong RamFor(int queues, int queueSize, int transferSize)
    {
        // A split ring of the next power of two is larger than a packed ring of any size up to it.
        var perQueue = Queues.SplitQueueLayout.For((int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)queueSize)).TotalSize + 4096 + (ulong)queueSize * ((ulong)transferSize + 4096 + 64);
        var total = (ulong)queues * perQueue + (1 << 20);
        return (total + 0xfffff) & ~0xfffffUL;
    }

    public void Dispose()
    {
        foreach (var t in IoThreads)
            t.Dispose();
        Irq.Dispose();
        Ram.Dispose();
    }
}
