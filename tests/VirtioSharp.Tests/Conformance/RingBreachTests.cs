using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Conformance;

/// <summary>
/// Driver requirements of the split ring (2.7) broken on purpose by a hand-written driver, each
/// checked for its diagnosis and the device's answer with strict off, warn and fail
/// (see <see cref="BreachCheck"/>).
/// </summary>
public sealed class RingBreachTests
{
    private const ushort Next = SplitRing.DescFNext;
    private const ushort Write = SplitRing.DescFWrite;
    private const ushort Indirect = SplitRing.DescFIndirect;

    internal static readonly ulong Offered = OfferedFeatures();
    internal static readonly ulong NoIndirect = Offered & ~VirtioFeatures.Bit(VirtioFeatures.RingIndirectDesc);

    private static ulong OfferedFeatures()
    {
        // What the device offers, less VIRTIO_F_RING_PACKED: the hand driver writes split rings.
        using var d = new HandDriver(StrictMode.Off);
        return d.Device.DeviceFeatures & ~VirtioFeatures.Bit(VirtioFeatures.RingPacked);
    }

    private static Seg Header(HandDriver d, BlkRequestType type = BlkRequestType.In, ulong sector = 0) => new(d.Header(type, sector), BlkLayout.HeaderSize);
    private static Seg Status(HandDriver d) => new(d.StatusByte(), 1, true);
    private static Seg ReadData(HandDriver d, uint length = 512) => new(d.Data(length), length, true);

    [Fact]
    public void Readable_descriptor_after_a_writable_one_2_7_4_2() => BreachCheck.Ring(
        new Expect("2.7.4.2", "descriptor 2:", "every device-readable descriptor before the first device-writable one",
            "device-readable descriptor after a device-writable one")
        { Status = BlkStatus.IoErr },
        d => d.Submit(2, Header(d), ReadData(d), new Seg(d.Data(16), 16), Status(d)));

    [Fact]
    public void Chain_that_loops_2_7_5_2() => BreachCheck.Ring(
        new Expect("2.7.5.3.1", "no loop", "longer than the queue size") { Reply = Reply.NoStatus },
        d =>
        {
            var status = d.StatusByte();
            d.Desc(0, d.Header(BlkRequestType.In), 16, Next, 1);
            d.Desc(1, d.Data(512), 512, Write | Next, 0); // back to the head: a loop
            return d.SubmitHead(0, status, Submitted.AnyDescriptor);
        });

    [Fact]
    public void Chain_longer_than_the_queue_size_2_7_5_3_1() => BreachCheck.Ring(
        new Expect("2.7.5.3.1", "no longer than the queue size") { Reply = Reply.NoStatus },
        d =>
        {
            // A header, then an indirect table of 16 more: 17 buffers on a queue of 16.
            var status = d.StatusByte();
            var table = d.IndirectTable([.. Enumerable.Range(0, 15).Select(_ => new Seg(d.Data(512), 512, true)), new Seg(status, 1, true)]);
            d.Desc(0, d.Header(BlkRequestType.In), 16, Next, 1);
            d.Desc(1, table, 16 * SplitRing.DescriptorSize, Indirect);
            return d.SubmitHead(0, status, Submitted.AnyDescriptor);
        });

    [Fact]
    public void Next_past_the_descriptor_table_2_7_5_2() => BreachCheck.Ring(
        new Expect("2.7.5.2", "descriptor 0:", "below the size of its descriptor table") { Reply = Reply.NoStatus },
        d =>
        {
            var status = d.StatusByte();
            d.Desc(0, d.Header(BlkRequestType.In), 16, Next, 40);
            return d.SubmitHead(0, status, 0);
        });

    [Fact]
    public void Indirect_without_the_feature_2_7_5_3_1() => BreachCheck.Ring(
        new Expect("2.7.5.3.1", "descriptor 0:", "only once VIRTIO_F_INDIRECT_DESC is negotiated") { Reply = Reply.NoStatus },
        d =>
        {
            var status = d.StatusByte();
            var table = d.IndirectTable(Header(d), ReadData(d), new Seg(status, 1, true));
            d.Desc(0, table, 3 * SplitRing.DescriptorSize, Indirect);
            return d.SubmitHead(0, status, 0);
        },
        features: NoIndirect);

    [Fact]
    public void Indirect_together_with_next_2_7_5_3_1() => BreachCheck.Ring(
        new Expect("2.7.5.3.1", "descriptor 0:", "VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT set together") { Reply = Reply.NoStatus },
        d =>
        {
            var status = d.StatusByte();
            var table = d.IndirectTable(Header(d), ReadData(d), new Seg(status, 1, true));
            d.Desc(0, table, 3 * SplitRing.DescriptorSize, Indirect | Next, 1);
            d.Desc(1, d.StatusByte(), 1, Write);
            return d.SubmitHead(0, status, 0);
        });

    [Fact]
    public void Indirect_inside_an_indirect_table_2_7_5_3_1() => BreachCheck.Ring(
        new Expect("2.7.5.3.1", "descriptor 1:", "no VIRTQ_DESC_F_INDIRECT inside an indirect table") { Reply = Reply.NoStatus },
        d =>
        {
            var status = d.StatusByte();
            var inner = d.IndirectTable(ReadData(d), new Seg(status, 1, true));
            var outer = d.IndirectTable(Header(d), new Seg(inner, 32));
            // Entry 1 of the outer table points at another table.
            d.DescAt(outer + 16, inner, 32, Indirect);
            d.Desc(0, outer, 2 * SplitRing.DescriptorSize, Indirect);
            return d.SubmitHead(0, status, 1);
        });

    [Fact]
    public void Indirect_table_length_not_a_multiple_of_16_2_7_5_3_1() => BreachCheck.Ring(
        new Expect("2.7.5.3.1", "descriptor 0:", "non-zero multiple of 16") { Reply = Reply.NoStatus },
        d =>
        {
            var status = d.StatusByte();
            var table = d.IndirectTable(Header(d), ReadData(d), new Seg(status, 1, true));
            d.Desc(0, table, 40, Indirect);
            return d.SubmitHead(0, status, 0);
        });

    [Fact]
    public void Indirect_table_outside_guest_memory_2_7_5() => BreachCheck.Ring(
        new Expect("2.7.5", "descriptor 0:", "indirect table lies outside guest memory") { Reply = Reply.NoStatus },
        d =>
        {
            d.Desc(0, HandDriver.RamBase + HandDriver.RamSize - 32, 48, Indirect); // 16 bytes past the end of RAM
            return d.SubmitHead(0, d.StatusByte(), 0);
        });

    [Fact]
    public void Buffer_running_past_the_end_of_guest_memory_2_7_5() => BreachCheck.Ring(
        new Expect("2.7.5", "descriptor 1:", "buffer lies outside guest memory") { Status = BlkStatus.IoErr },
        d => d.Submit(1, Header(d), new Seg(HandDriver.RamBase + HandDriver.RamSize - 511, 512, true), Status(d)));

    [Fact]
    public void Buffer_ending_on_the_last_byte_of_guest_memory_is_served()
    {
        using var d = new HandDriver(StrictMode.Fail);
        d.Init();
        var last = HandDriver.RamBase + HandDriver.RamSize - 512;
        d.Bytes(last, 512).Fill(0x77);
        var status = d.StatusByte();
        var s = d.Submit(new Seg(d.Header(BlkRequestType.Out, 3), 16), new Seg(last, 512), new Seg(status, 1, true));
        Assert.Equal((byte)BlkStatus.Ok, d.At(status));
        Assert.All(d.Backend.Contents(3 * 512, 512).ToArray(), b => Assert.Equal(0x77, b));
        // The status byte itself may be the very last byte of RAM.
        var s2 = d.Submit(new Seg(d.Header(BlkRequestType.Flush), 16), new Seg(HandDriver.RamBase + HandDriver.RamSize - 1, 1, true));
        Assert.Equal((byte)BlkStatus.Ok, d.At(s2.StatusAddress));
        Assert.Equal(0, d.Breaches.Total);
        Assert.Equal((uint)s.Head, d.Used(0).Id);
    }

    [Fact]
    public void Available_index_more_than_the_queue_size_ahead_2_7_13_3() => BreachCheck.Ring(
        new Expect("2.7.13.3", "queue 0:", "at most the queue size 16 ahead", "avail idx 17, 17 ahead") { Reply = Reply.RingCorrupt },
        d =>
        {
            d.SetAvailIdx(17);
            d.Notify();
            return Submitted.Ring(0);
        });

    [Fact]
    public void Available_index_decremented_2_7_6_1() => BreachCheck.Ring(
        new Expect("2.7.6.1", "never decreases", "avail idx 1, 1 behind") { Reply = Reply.RingCorrupt },
        d =>
        {
            Assert.True(d.GoodRequestServed());
            Assert.True(d.GoodRequestServed());
            d.SetAvailIdx(1);
            d.Notify();
            return Submitted.Ring(2);
        });

    [Fact]
    public void Head_past_the_descriptor_table_2_7_6() => BreachCheck.Ring(
        new Expect("2.7.6", "head below the queue size 16", "head 40 in available ring slot 0") { Reply = Reply.RingCorrupt },
        d =>
        {
            d.Offer(40);
            d.Notify();
            return Submitted.Ring(0);
        });

    /// <summary>
    /// 2.7.13.2: a head is offered again while the device still holds it. The device returns every
    /// chain before it takes the next, so a head is held only across an asynchronous boundary;
    /// the test holds one back by popping it itself, as a device with I/O in flight would.
    /// </summary>
    [Theory]
    [InlineData(StrictMode.Off)]
    [InlineData(StrictMode.Warn)]
    [InlineData(StrictMode.Fail)]
    public void Head_still_in_flight_offered_again_2_7_13_2(StrictMode mode)
    {
        using var d = new HandDriver(mode);
        d.Init();
        var queue = SplitDeviceQueue.Create(0, d.QueueSize, d.Ram.Memory, d.DescTable(), d.AvailRing(), d.UsedRing(), eventIdx: false, indirect: false, out var error)!;
        Assert.Null(error);
        var head = d.Chain(new Seg(d.Header(BlkRequestType.Flush), 16), new Seg(d.StatusByte(), 1, true));
        d.Offer(head);
        Assert.Equal(PopResult.Chain, queue.TryPop(out var held));
        Assert.Equal(head, held.Head);

        d.Offer(head); // the driver reuses descriptors the device has not returned
        Assert.Equal(Devices.QueueOutcome.NeedsReset, d.Device.ProcessQueue(queue));
        var breach = Assert.Single(d.Breaches.Breaches);
        Assert.Equal("2.7.13.2", breach.Section);
        Assert.Equal(0, breach.Queue);
        Assert.Equal(head, breach.Descriptor);
        Assert.Contains($"head {head}, still in flight, offered again", breach.ToString(), StringComparison.Ordinal);
        Assert.True(d.Log.Contains($"driver breach: {breach}"));
        Assert.Equal(0, d.UsedIdx);
        Assert.Equal(1, queue.InFlight);
    }
}
