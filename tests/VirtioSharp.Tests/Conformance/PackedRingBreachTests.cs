using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Conformance;

/// <summary>
/// Every driver requirement of 2.8 a device can observe, broken on purpose in a packed ring the test
/// writes by hand and drained by <see cref="BlkDevice"/>: each breach is reported with its section,
/// a corrupt ring ends in DEVICE_NEEDS_RESET, a malformed request still gets its used descriptor.
/// </summary>
public sealed class PackedRingBreachTests : IDisposable
{
    private const ulong Base = 0x4000_0000;
    private const ulong Data = Base + 0x10_0000;
    private const ushort N = PackedRing.DescFNext, W = PackedRing.DescFWrite, I = PackedRing.DescFIndirect;
    private static readonly ushort A = PackedRing.AvailFlags(true);
    private readonly GuestRam _ram = new(Base, 2 << 20);
    private readonly ListLogSink _log = new();
    private BlkDevice _device = null!;
    private PackedDeviceQueue _queue = null!;
    private int _size;

    public void Dispose() => _ram.Dispose();

    private void Start(int size = 8, bool eventIdx = false, bool indirect = true, StrictMode mode = StrictMode.Warn)
    {
        _size = size;
        _device = new BlkDevice(new MemoryBackend(1 << 20), new BlkDeviceOptions { Strict = mode, Log = _log, QueueSize = 8 });
        var features = _device.DeviceFeatures;
        if (!eventIdx)
            features &= ~VirtioFeatures.Bit(VirtioFeatures.RingEventIdx);
        if (!indirect)
            features &= ~VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc);
        _device.Activate(features);
        var l = PackedQueueLayout.For(size);
        _queue = PackedDeviceQueue.Create(0, size, _ram.Memory, Base, Base + l.DriverEventOffset, Base + l.DeviceEventOffset, eventIdx, indirect, out var e)
            ?? throw new InvalidOperationException(e);
        _queue.Breaches = _device.Breaches;
    }

    private void Desc(int slot, ulong addr, uint len, ushort id, ushort flags) => Desc(Base + (ulong)slot * 16, addr, len, id, flags, true);

    private void Desc(ulong at, ulong addr, uint len, ushort id, ushort flags, bool _)
    {
        var d = _ram.Memory.GetSpan(at, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], id);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], flags);
    }

    private static ulong Header => Data;
    private static ulong Status => Data + 0x100;
    private static ulong Buffer => Data + 0x1000;

    private void WriteHeader(BlkRequestType type = BlkRequestType.In)
    {
        new BlkRequestHeader((uint)type, 0, 0).Write(_ram.Memory.GetSpan(Header, 16));
        _ram.Memory.GetSpan(Status, 1)[0] = 0xff;
    }

    private byte StatusByte => _ram.Memory.GetSpan(Status, 1)[0];
    private ushort UsedFlagsAt(int slot) => BinaryPrimitives.ReadUInt16LittleEndian(_ram.Memory.GetSpan(Base + (ulong)slot * 16 + 14, 2));

    private void AssertBreach(string section, string text)
    {
        Assert.True(_device.Breaches.CountsBySection.ContainsKey(section), $"no breach of {section}: {string.Join("; ", _log.Lines.Select(l => l.Message))}");
        Assert.True(_log.Contains(section) && _log.Contains(text), string.Join("\n", _log.Lines.Select(l => l.Message)));
    }

    // ------------------------------------------------------------ a corrupt ring: DEVICE_NEEDS_RESET

    [Fact]
    public void Flags_going_backwards_at_the_device_position_2_8_1()
    {
        Start();
        Desc(0, Header, 16, 0, PackedRing.UsedFlags(true));
        Assert.Equal(QueueOutcome.NeedsReset, _device.ProcessQueue(_queue));
        AssertBreach("2.8.1", "went backwards");
    }

    [Fact]
    public void First_descriptor_made_available_before_the_rest_of_its_list_2_8_17()
    {
        Start();
        Desc(0, Header, 16, 0, (ushort)(A | N));
        Desc(1, Status, 1, 0, W);
        Assert.Equal(QueueOutcome.NeedsReset, _device.ProcessQueue(_queue));
        AssertBreach("2.8.17", "not marked available");
    }

    [Fact]
    public void List_longer_than_the_queue_size_2_8_17()
    {
        Start(size: 4);
        for (var i = 0; i < 4; i++)
            Desc(i, Header, 16, 0, (ushort)(A | N));
        Assert.Equal(QueueOutcome.NeedsReset, _device.ProcessQueue(_queue));
        AssertBreach("2.8.17", "no buffer id can be found");
    }

    // ------------------------------------------------------------ a malformed request: its used descriptor with an error

    [Fact]
    public void Device_readable_after_device_writable_2_8_17()
    {
        Start();
        WriteHeader(BlkRequestType.Out);
        Desc(0, Header, 16, 5, (ushort)(A | N));
        Desc(1, Buffer, 512, 5, (ushort)(A | N | W));
        Desc(2, Buffer + 512, 512, 5, (ushort)(A | N));
        Desc(3, Status, 1, 5, (ushort)(A | W));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue));
        AssertBreach("2.8.17", "device-readable descriptor after a device-writable one");
        Assert.Equal((byte)BlkStatus.IoErr, StatusByte);
        Assert.True(PackedRing.IsUsed(UsedFlagsAt(0), true));
    }

    [Fact]
    public void Indirect_without_the_feature_2_8_19()
    {
        Start(indirect: false);
        Desc(0, Buffer, 48, 3, (ushort)(A | I));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue));
        AssertBreach("2.8.19", "VIRTIO_F_INDIRECT_DESC was not negotiated");
        Assert.True(PackedRing.IsUsed(UsedFlagsAt(0), true)); // id 3 comes back with len 0
    }

    [Fact]
    public void Indirect_inside_a_list_linked_by_next_2_8_19()
    {
        Start();
        WriteHeader();
        Desc(0, Header, 16, 4, (ushort)(A | N));
        Desc(1, Buffer, 48, 4, (ushort)(A | I));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue));
        AssertBreach("2.8.19", "VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT set together");
        Assert.True(PackedRing.IsUsed(UsedFlagsAt(0), true));
    }

    [Fact]
    public void Indirect_table_length_not_a_multiple_of_16_2_8_7()
    {
        Start();
        Desc(0, Buffer, 40, 1, (ushort)(A | I));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue));
        AssertBreach("2.8.7", "not a multiple of 16");
    }

    // ------------------------------------------------------------ strict only: the request is served

    [Fact]
    public void Flags_other_than_write_in_an_indirect_table_2_8_19()
    {
        Start();
        WriteHeader();
        var table = Data + 0x8000;
        Desc(table, Header, 16, 0, N, true);                 // NEXT: reserved in a table, ignored by the device
        Desc(table + 16, Buffer, 512, 0, W, true);
        Desc(table + 32, Status, 1, 0, W, true);
        Desc(0, table, 48, 2, (ushort)(A | I));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue));
        AssertBreach("2.8.19", "only VIRTQ_DESC_F_WRITE");
        Assert.Equal((byte)BlkStatus.Ok, StatusByte);
    }

    [Fact]
    public void Reserved_event_suppression_flags_2_8_14()
    {
        Start();
        WriteHeader();
        BinaryPrimitives.WriteUInt16LittleEndian(_ram.Memory.GetSpan(Base + 8 * 16 + 2, 2), 3); // driver event flags: the reserved value
        Desc(0, Header, 16, 0, (ushort)(A | N));
        Desc(1, Status, 1, 0, (ushort)(A | W));
        _device.ProcessQueue(_queue);
        AssertBreach("2.8.14", "flags 0x0003");
        Assert.Equal((byte)BlkStatus.Ok, StatusByte);
    }

    [Fact]
    public void Descriptor_specific_events_without_event_idx_2_8_10()
    {
        Start(eventIdx: false);
        WriteHeader();
        BinaryPrimitives.WriteUInt16LittleEndian(_ram.Memory.GetSpan(Base + 8 * 16 + 2, 2), PackedRing.EventFlagsDesc);
        Desc(0, Header, 16, 0, (ushort)(A | N));
        Desc(1, Status, 1, 0, (ushort)(A | W));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue)); // treated as ENABLE
        AssertBreach("2.8.10", "RING_EVENT_FLAGS_DESC without VIRTIO_F_EVENT_IDX");
    }

    [Fact]
    public void Strict_off_serves_what_the_device_may_ignore_without_a_report()
    {
        Start(mode: StrictMode.Off);
        WriteHeader();
        var table = Data + 0x8000;
        Desc(table, Header, 16, 0, N, true);
        Desc(table + 16, Status, 1, 0, W, true);
        Desc(0, table, 32, 2, (ushort)(A | I));
        Assert.Equal(QueueOutcome.Interrupt, _device.ProcessQueue(_queue));
        Assert.Equal(0, _device.Breaches.Total);
        Assert.Equal((byte)BlkStatus.Ok, StatusByte);
    }

    [Fact]
    public void Strict_fail_stops_at_the_first_breach()
    {
        Start(mode: StrictMode.Fail);
        WriteHeader();
        BinaryPrimitives.WriteUInt16LittleEndian(_ram.Memory.GetSpan(Base + 8 * 16 + 2, 2), 7);
        Desc(0, Header, 16, 0, (ushort)(A | N));
        Desc(1, Status, 1, 0, (ushort)(A | W));
        _device.ProcessQueue(_queue);
        Assert.True(_device.Breaches.ResetRequested);
        AssertBreach("2.8.14", "flags 0x0007");
    }
}
