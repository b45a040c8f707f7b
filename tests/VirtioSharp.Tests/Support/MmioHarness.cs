using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Mmio;
using R = VirtioSharp.Mmio.MmioRegisters;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// A <see cref="VirtioMmioDevice"/> over a <see cref="BlkDevice"/>, with no threads: tests play the
/// driver with raw 32-bit register loads and stores and a hand-built ring, and call
/// <see cref="VirtioMmioDevice.ProcessQueue"/> where a device thread would.
/// </summary>
public sealed class MmioHarness : IDisposable
{
    private int _interrupts;
    private int _notified;

    public MmioHarness(BlkDeviceOptions? options = null, int queueSize = 16, IBlockBackend? backend = null)
    {
        Log = new ListLogSink();
        Backend = backend ?? new MemoryBackend(1 << 20);
        Blk = new BlkDevice(Backend, (options ?? new BlkDeviceOptions()) with { QueueSize = 64, Log = Log });
        Ring = new RingBuilder(queueSize, 4 << 20);
        Mmio = new VirtioMmioDevice(Blk, Ring.Memory)
        {
            InterruptRaised = () => Interlocked.Increment(ref _interrupts),
            QueueNotified = _ => Interlocked.Increment(ref _notified),
        };
    }

    public ListLogSink Log { get; }
    public IBlockBackend Backend { get; }
    public BlkDevice Blk { get; }
    public RingBuilder Ring { get; }
    public VirtioMmioDevice Mmio { get; }
    public int Interrupts => Volatile.Read(ref _interrupts);
    public int Notified => Volatile.Read(ref _notified);

    public uint Read(uint register) => Mmio.Read(register, 4);
    public void Write(uint register, uint value) => Mmio.Write(register, value, 4);
    public DeviceStatus Status => (DeviceStatus)Read(R.Status);
    public void SetStatus(DeviceStatus s) => Write(R.Status, (uint)s);

    public ulong ReadDeviceFeatures()
    {
        Write(R.DeviceFeaturesSel, 0);
        var low = Read(R.DeviceFeatures);
        Write(R.DeviceFeaturesSel, 1);
        return low | ((ulong)Read(R.DeviceFeatures) << 32);
    }

    public void WriteDriverFeatures(ulong features)
    {
        Write(R.DriverFeaturesSel, 0);
        Write(R.DriverFeatures, (uint)features);
        Write(R.DriverFeaturesSel, 1);
        Write(R.DriverFeatures, (uint)(features >> 32));
    }

    /// <summary>4.2.3.2: select, size, the three areas (those of <see cref="Ring"/> unless given), QueueReady = 1.</summary>
    public void SetupQueue(int queue = 0, uint? size = null, ulong? desc = null, ulong? driver = null, ulong? device = null)
    {
        Write(R.QueueSel, (uint)queue);
        Write(R.QueueNum, size ?? (uint)Ring.Size);
        var d = desc ?? Ring.Desc;
        var a = driver ?? Ring.Avail;
        var u = device ?? Ring.Used;
        Write(R.QueueDescLow, (uint)d);
        Write(R.QueueDescHigh, (uint)(d >> 32));
        Write(R.QueueDriverLow, (uint)a);
        Write(R.QueueDriverHigh, (uint)(a >> 32));
        Write(R.QueueDeviceLow, (uint)u);
        Write(R.QueueDeviceHigh, (uint)(u >> 32));
        Write(R.QueueReady, 1);
    }

    /// <summary>The whole 3.1.1 sequence by hand with <paramref name="features"/>; returns the status read back after FEATURES_OK.</summary>
    public DeviceStatus Initialize(ulong features, bool driverOk = true)
    {
        SetStatus(0);
        SetStatus(DeviceStatus.Acknowledge);
        SetStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver);
        WriteDriverFeatures(features);
        SetStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk);
        var afterFeatures = Status;
        SetupQueue();
        if (driverOk)
            SetStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk);
        return afterFeatures;
    }

    /// <summary>Offers a FLUSH request in the ring, drains queue 0 and returns (used elements added, status byte).</summary>
    public (int Used, byte Status) Flush()
    {
        var header = Ring.Alloc(16);
        new BlkRequestHeader((uint)BlkRequestType.Flush, 0, 0).Write(Ring.Span(header, 16));
        var status = Ring.Alloc(1);
        Ring.Span(status, 1)[0] = 0xee;
        var before = Ring.UsedIdx;
        Ring.Offer(Ring.Chain(Buf.R(header, 16), Buf.W(status, 1)));
        Mmio.ProcessQueue(0);
        return ((ushort)(Ring.UsedIdx - before), Ring.Span(status, 1)[0]);
    }

    public void Dispose()
    {
        Ring.Dispose();
        Backend.Dispose();
    }
}
