using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Mmio;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using R = VirtioSharp.Mmio.MmioRegisters;

namespace VirtioSharp.Tests.Conformance;

/// <summary>One buffer of a hand-built chain: guest address, length, device-writable or not.</summary>
internal readonly record struct Seg(ulong Address, uint Length, bool Writable = false);

/// <summary>
/// What a test submitted: the chain's head, the guest address of its status byte, and the
/// descriptor the device should name if it reports a breach (the head unless the test says).
/// </summary>
internal readonly record struct Submitted(ushort Head, ulong StatusAddress, int Descriptor)
{
    /// <summary>Descriptor the device may choose (e.g. where it noticed a chain was too long).</summary>
    public const int AnyDescriptor = int.MinValue;

    /// <summary>The used idx before the offending request, when the test served others first (-1: taken by the checker).</summary>
    public int UsedBefore { get; init; } = -1;

    /// <summary>A breach of the ring itself: no head, no status, no descriptor.</summary>
    public static Submitted Ring(ushort usedBefore) => new(0, 0, -1) { UsedBefore = usedBefore };
}

/// <summary>
/// A driver written by hand so a test can break any rule: it stores to virtio-mmio registers
/// one by one and lays out descriptor tables and rings byte by byte. There are no threads:
/// a QueueNotify write is followed by the device's drain on the test's own thread, so every
/// answer can be checked right after the request. Guest RAM sits between guard pages.
/// </summary>
internal sealed class HandDriver : IDisposable
{
    public const ulong RamBase = 0x8000_0000;
    public const ulong RamSize = 1 << 20;
    public const ulong DiskSize = 1 << 20;
    public const ulong DiskSectors = DiskSize / BlkLayout.SectorSize;
    public const int MaxQueueSize = 64;
    /// <summary>Queue q lives at RamBase + q * QueueStride: descriptors, then avail at +4 KiB, used at +8 KiB.</summary>
    public const ulong QueueStride = 0x4000;
    private const ulong HeapStart = RamBase + 0x10000;

    private readonly List<int> _notified = [];
    private ulong _next = HeapStart;
    private ushort _nextDesc;
    private ushort _availIdx;

    public HandDriver(StrictMode strict, Func<BlkDeviceOptions, BlkDeviceOptions>? configure = null, bool readOnly = false, int numQueues = 2)
    {
        Ram = new GuardedGuestRam(RamBase, RamSize, guardSize: 16 << 10);
        Backend = new MemoryBackend(DiskSize, readOnly);
        var options = new BlkDeviceOptions { NumQueues = numQueues, QueueSize = MaxQueueSize, Strict = strict, Log = Log, Serial = "hand-driver" };
        Device = new BlkDevice(Backend, configure?.Invoke(options) ?? options);
        Mmio = new VirtioMmioDevice(Device, Ram.Memory)
        {
            QueueNotified = q => _notified.Add(q),
            InterruptRaised = () => Interrupts++,
        };
    }

    public GuardedGuestRam Ram { get; }
    public MemoryBackend Backend { get; }
    public BlkDevice Device { get; }
    public VirtioMmioDevice Mmio { get; }
    public ListLogSink Log { get; } = new();
    public BreachReporter Breaches => Device.Breaches;
    public int Interrupts { get; private set; }
    public int QueueSize { get; private set; } = 16;

    public ulong DescTable(int queue = 0) => RamBase + QueueStride * (ulong)queue;
    public ulong AvailRing(int queue = 0) => DescTable(queue) + 0x1000;
    public ulong UsedRing(int queue = 0) => DescTable(queue) + 0x2000;

    public string Dump() => string.Join("\n", Log.Lines.Select(l => $"{l.Level}: {l.Message}"));

    // --- registers ---

    public uint Read(uint register) => Mmio.Read(register, 4);
    public void Write(uint register, uint value) => Mmio.Write(register, value, 4);
    public DeviceStatus Status => (DeviceStatus)Read(R.Status);
    public void SetStatus(DeviceStatus status) => Write(R.Status, (uint)status);
    public bool NeedsReset => (Status & DeviceStatus.DeviceNeedsReset) != 0;
    public bool ConfigChangeInterrupt => (Read(R.InterruptStatus) & R.InterruptConfigChange) != 0;

    public ulong ReadDeviceFeatures()
    {
        Write(R.DeviceFeaturesSel, 0);
        var low = Read(R.DeviceFeatures);
        Write(R.DeviceFeaturesSel, 1);
        return low | (ulong)Read(R.DeviceFeatures) << 32;
    }

    public void WriteDriverFeatures(ulong features)
    {
        Write(R.DriverFeaturesSel, 0);
        Write(R.DriverFeatures, (uint)features);
        Write(R.DriverFeaturesSel, 1);
        Write(R.DriverFeatures, (uint)(features >> 32));
    }

    /// <summary>4.2.3.2: select, size, the three areas, ready. The ring memory is zeroed first.</summary>
    public void SetupQueue(int queue, int size, bool ready = true)
    {
        Ram.Memory.GetSpan(DescTable(queue), (int)QueueStride).Clear();
        SetupQueueAt(queue, size, DescTable(queue), AvailRing(queue), UsedRing(queue), ready);
    }

    public void SetupQueueAt(int queue, int size, ulong desc, ulong avail, ulong used, bool ready = true)
    {
        Write(R.QueueSel, (uint)queue);
        Write(R.QueueNum, (uint)size);
        Write(R.QueueDescLow, (uint)desc);
        Write(R.QueueDescHigh, (uint)(desc >> 32));
        Write(R.QueueDriverLow, (uint)avail);
        Write(R.QueueDriverHigh, (uint)(avail >> 32));
        Write(R.QueueDeviceLow, (uint)used);
        Write(R.QueueDeviceHigh, (uint)(used >> 32));
        if (ready)
            Write(R.QueueReady, 1);
    }

    /// <summary>The whole of 3.1.1 done right, queue 0 of <paramref name="queueSize"/> set up, DRIVER_OK.</summary>
    public void Init(ulong? features = null, int queueSize = 16)
    {
        Begin();
        Negotiate(features);
        UseQueue(queueSize);
        SetupQueue(0, queueSize);
        DriverOk();
    }

    /// <summary>3.1.1 steps 1-3: reset, ACKNOWLEDGE, DRIVER.</summary>
    public void Begin()
    {
        Reset();
        SetStatus(DeviceStatus.Acknowledge);
        SetStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver);
    }

    /// <summary>3.1.1 steps 4-6: read the offer, write <paramref name="features"/> (default: all offered but VIRTIO_F_RING_PACKED, as this driver writes split rings), FEATURES_OK, check it stuck.</summary>
    public void Negotiate(ulong? features = null)
    {
        var offered = ReadDeviceFeatures();
        WriteDriverFeatures(features ?? offered & ~VirtioFeatures.Bit(VirtioFeatures.RingPacked));
        SetStatus((Status & ~DeviceStatus.DeviceNeedsReset) | DeviceStatus.FeaturesOk);
        Assert.True((Status & DeviceStatus.FeaturesOk) != 0, $"FEATURES_OK did not stick\n{Dump()}");
    }

    /// <summary>3.1.1 step 8, then the drains DRIVER_OK starts (chains made available earlier).</summary>
    public void DriverOk()
    {
        SetStatus((Status & ~DeviceStatus.DeviceNeedsReset) | DeviceStatus.DriverOk);
        RunDevice();
    }

    /// <summary>Writes 0 to Status (device reset) and forgets the ring bookkeeping.</summary>
    public void Reset()
    {
        Write(R.Status, 0);
        UseQueue(QueueSize);
    }

    /// <summary>Starts a fresh ring of <paramref name="size"/> for queue 0 in the bookkeeping (memory is zeroed by SetupQueue).</summary>
    public void UseQueue(int size)
    {
        QueueSize = size;
        _nextDesc = 0;
        _availIdx = 0;
        _next = HeapStart;
    }

    // --- guest memory ---

    public ulong Alloc(uint length, uint alignment = 16)
    {
        var at = (_next + alignment - 1) & ~((ulong)alignment - 1);
        Assert.True(at + length <= RamBase + RamSize, "hand driver heap exhausted");
        _next = at + length;
        Ram.Memory.GetSpan(at, (int)length).Clear();
        return at;
    }

    public Span<byte> Bytes(ulong address, int length) => Ram.Memory.GetSpan(address, length);
    public byte At(ulong address) => Bytes(address, 1)[0];

    public ulong Header(BlkRequestType type, ulong sector = 0, uint reserved = 0) => Header((uint)type, sector, reserved);

    public ulong Header(uint type, ulong sector = 0, uint reserved = 0)
    {
        var a = Alloc(BlkLayout.HeaderSize);
        new BlkRequestHeader(type, reserved, sector).Write(Bytes(a, BlkLayout.HeaderSize));
        return a;
    }

    /// <summary>A one-byte status buffer preset to 0xff, so "never written" is visible.</summary>
    public ulong StatusByte()
    {
        var a = Alloc(1);
        Bytes(a, 1)[0] = 0xff;
        return a;
    }

    public ulong Data(uint length, byte fill = 0x5a)
    {
        var a = Alloc(Math.Max(length, 1), 512);
        Bytes(a, (int)length).Fill(fill);
        return a;
    }

    /// <summary>DISCARD / WRITE_ZEROES segments (5.2.6: struct virtio_blk_discard_write_zeroes).</summary>
    public ulong Segments(params BlkDiscardSegment[] segments)
    {
        var a = Alloc((uint)(segments.Length * BlkLayout.DiscardSegmentSize));
        for (var i = 0; i < segments.Length; i++)
            segments[i].Write(Bytes(a + (ulong)(i * BlkLayout.DiscardSegmentSize), BlkLayout.DiscardSegmentSize));
        return a;
    }

    // --- descriptors and rings ---

    /// <summary>Writes struct virtq_desc at any guest address (a table slot or an indirect table entry).</summary>
    public void DescAt(ulong entry, ulong address, uint length, ushort flags, ushort next = 0)
    {
        var b = Bytes(entry, SplitRing.DescriptorSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b, address);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(b[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(b[14..], next);
    }

    /// <summary>Writes descriptor <paramref name="index"/> of queue 0's table.</summary>
    public void Desc(int index, ulong address, uint length, ushort flags, ushort next = 0) =>
        DescAt(DescTable() + (ulong)index * SplitRing.DescriptorSize, address, length, flags, next);

    /// <summary>Takes the next unused descriptor index of queue 0.</summary>
    public ushort NextDescriptor()
    {
        var i = _nextDesc;
        _nextDesc = (ushort)((_nextDesc + 1) % QueueSize);
        return i;
    }

    /// <summary>Chains <paramref name="segments"/> through fresh descriptors of queue 0 (NEXT links, WRITE flags as given); returns the head.</summary>
    public ushort Chain(params Seg[] segments)
    {
        var indices = segments.Select(_ => NextDescriptor()).ToArray();
        for (var i = 0; i < segments.Length; i++)
        {
            var last = i == segments.Length - 1;
            var flags = (ushort)((segments[i].Writable ? SplitRing.DescFWrite : 0) | (last ? 0 : SplitRing.DescFNext));
            Desc(indices[i], segments[i].Address, segments[i].Length, flags, last ? (ushort)0 : indices[i + 1]);
        }
        return indices[0];
    }

    /// <summary>Writes an indirect table of <paramref name="segments"/> (2.7.5.3) and returns its guest address.</summary>
    public ulong IndirectTable(params Seg[] segments)
    {
        var table = Alloc((uint)(segments.Length * SplitRing.DescriptorSize));
        for (var i = 0; i < segments.Length; i++)
        {
            var last = i == segments.Length - 1;
            var flags = (ushort)((segments[i].Writable ? SplitRing.DescFWrite : 0) | (last ? 0 : SplitRing.DescFNext));
            DescAt(table + (ulong)(i * SplitRing.DescriptorSize), segments[i].Address, segments[i].Length, flags, last ? (ushort)0 : (ushort)(i + 1));
        }
        return table;
    }

    /// <summary>2.7.13.2 / 2.7.13.3: ring[idx % size] = head, then idx + 1.</summary>
    public void Offer(ushort head)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(Bytes(AvailRing() + 4 + 2 * (ulong)(_availIdx % QueueSize), 2), head);
        _availIdx++;
        SetAvailIdx(_availIdx);
    }

    public ushort AvailIndex => _availIdx;

    public void SetAvailIdx(ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Bytes(AvailRing() + 2, 2), value);

    /// <summary>Writes QueueNotify and runs the drains the device asked for, on this thread.</summary>
    public void Notify(int queue = 0)
    {
        Write(R.QueueNotify, (uint)queue);
        RunDevice();
    }

    /// <summary>Runs the device's drains for every queue notified so far (the machine's device thread, inline).</summary>
    public void RunDevice()
    {
        var pending = _notified.ToArray();
        _notified.Clear();
        foreach (var q in pending)
            Mmio.ProcessQueue(q);
    }

    public ushort UsedIdx => BinaryPrimitives.ReadUInt16LittleEndian(Bytes(UsedRing() + 2, 2));

    public (uint Id, uint Length) Used(ushort index)
    {
        var e = Bytes(UsedRing() + 4 + 8 * (ulong)(index % QueueSize), 8);
        return (BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
    }

    // --- whole requests ---

    /// <summary>Chains, offers and notifies; the status byte is the last byte of the last segment.</summary>
    public Submitted Submit(params Seg[] segments) => Submit(-1, segments);

    /// <summary>As <see cref="Submit(Seg[])"/>, naming the descriptor a breach report should point at (-1: the head).</summary>
    public Submitted Submit(int breachDescriptor, params Seg[] segments)
    {
        var head = Chain(segments);
        Offer(head);
        Notify();
        var last = segments[^1];
        return new Submitted(head, last.Address + Math.Max(last.Length, 1) - 1, breachDescriptor == -1 ? head : breachDescriptor);
    }

    /// <summary>Offers an already built head and notifies.</summary>
    public Submitted SubmitHead(ushort head, ulong statusAddress, int breachDescriptor = -1)
    {
        Offer(head);
        Notify();
        return new Submitted(head, statusAddress, breachDescriptor == -1 ? head : breachDescriptor);
    }

    /// <summary>A correct 512-byte read; true when the device answered it with OK.</summary>
    public bool GoodRequestServed()
    {
        var before = UsedIdx;
        var status = StatusByte();
        var s = Submit(new Seg(Header(BlkRequestType.In, 1), 16), new Seg(Data(512), 512, true), new Seg(status, 1, true));
        return UsedIdx == (ushort)(before + 1) && Used(before).Id == s.Head && At(status) == (byte)BlkStatus.Ok;
    }

    public void Dispose()
    {
        Ram.Dispose();
        Backend.Dispose();
    }
}
