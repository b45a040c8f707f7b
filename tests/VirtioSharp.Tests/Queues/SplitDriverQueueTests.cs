using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>The driver half of the split ring (2.7.13, 2.7.14), checked byte by byte in ring memory.</summary>
public sealed class SplitDriverQueueTests
{
    private static DriverBuffer R(ulong a, uint n) => new(a, n, false);
    private static DriverBuffer W(ulong a, uint n) => new(a, n, true);

    /// <summary>Plays the device: puts {id, len} in the used ring and moves used idx.</summary>
    private static void DeviceReturns(RingBuilder ring, uint id, uint len)
    {
        ring.WriteUsedElement(ring.UsedIdx, id, len);
        ring.UsedIdx++;
    }

    [Fact]
    public void TryAdd_chains_free_descriptors_with_NEXT_and_WRITE_2_7_13_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver();
        Assert.Equal(8, q.FreeDescriptors);

        Assert.True(q.TryAdd([R(0x4000_1000, 16), W(0x4000_2000, 512), W(0x4000_3000, 1)], out var head));

        Assert.Equal(0, head);
        Assert.Equal(5, q.FreeDescriptors);
        var d0 = ring.ReadDescriptor(head);
        Assert.Equal((0x4000_1000UL, 16u, SplitRing.DescFNext), (d0.Address, d0.Length, d0.Flags));
        var d1 = ring.ReadDescriptor(d0.Next);
        Assert.Equal((0x4000_2000UL, 512u, (ushort)(SplitRing.DescFNext | SplitRing.DescFWrite)), (d1.Address, d1.Length, d1.Flags));
        var d2 = ring.ReadDescriptor(d1.Next);
        Assert.Equal((0x4000_3000UL, 1u, SplitRing.DescFWrite), (d2.Address, d2.Length, d2.Flags)); // last: no NEXT
        Assert.Equal(3, new[] { head, d0.Next, d1.Next }.Distinct().Count());
    }

    [Fact]
    public void TryAdd_fills_available_ring_slots_in_order_and_leaves_idx_for_Publish_2_7_13_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver();
        var heads = new List<ushort>();
        for (var i = 0; i < 3; i++)
        {
            Assert.True(q.TryAdd([W(0x4000_1000 + (ulong)i * 16, 8)], out var h));
            heads.Add(h);
        }

        Assert.Equal(heads, new[] { ring.AvailSlot(0), ring.AvailSlot(1), ring.AvailSlot(2) });
        Assert.Equal(0, ring.AvailIdx);     // not yet visible to the device
        Assert.Equal(3, q.AvailIndex);
        q.Publish();
        Assert.Equal(3, ring.AvailIdx);     // 2.7.13.3: idx increased by the number of heads added
    }

    [Fact]
    public void TryAdd_refuses_chains_it_cannot_place_and_changes_nothing_2_7_13_1()
    {
        using var ring = new RingBuilder(4);
        var q = ring.Driver();
        Assert.True(q.TryAdd([R(0x4000_1000, 16), R(0x4000_1010, 16), W(0x4000_1020, 1)], out _));
        Assert.False(q.TryAdd([R(0x4000_1000, 16), W(0x4000_1020, 1)], out _)); // one descriptor left
        Assert.False(q.TryAdd([], out _));
        Assert.Equal(1, q.FreeDescriptors);
        Assert.Equal(1, q.AvailIndex);
        Assert.True(q.TryAdd([W(0x4000_1020, 1)], out _));
        Assert.Equal(0, q.FreeDescriptors);
    }

    [Fact]
    public void TryAdd_rejects_a_readable_buffer_after_a_writable_one_2_7_4_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver();
        Assert.Throws<ArgumentException>(() => q.TryAdd([W(0x4000_1000, 8), R(0x4000_2000, 8)], out _));
    }

    [Fact]
    public void Returned_chains_go_back_on_the_free_list_and_are_reused_2_7_14()
    {
        using var ring = new RingBuilder(4);
        var q = ring.Driver();
        Assert.True(q.TryAdd([R(0x4000_1000, 16), W(0x4000_1010, 1)], out var a));
        Assert.True(q.TryAdd([R(0x4000_1000, 16), W(0x4000_1010, 1)], out var b));
        Assert.Equal(0, q.FreeDescriptors);
        q.Publish();

        DeviceReturns(ring, b, 1);
        Assert.True(q.TryTakeUsed(out var head, out var len, out var error));
        Assert.Equal((b, 1u, UsedError.None), (head, len, error));
        Assert.Equal(2, q.FreeDescriptors);
        Assert.False(q.TryTakeUsed(out _, out _, out error));
        Assert.Equal(UsedError.None, error);

        // The freed descriptors are the ones handed out next.
        Assert.True(q.TryAdd([R(0x4000_1000, 16), W(0x4000_1010, 1)], out var c));
        Assert.Equal(b, c);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void Publish_without_EVENT_IDX_notifies_unless_VIRTQ_USED_F_NO_NOTIFY_2_7_10_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver(eventIdx: false);
        ring.AvailEvent = 5; // 2.7.10.1: MUST ignore avail_event

        Assert.False(q.Publish()); // nothing new to publish
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.True(q.Publish());
        Assert.Equal(1, ring.AvailIdx);

        ring.UsedFlags = SplitRing.UsedFNoNotify;
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.False(q.Publish());
        Assert.Equal(2, ring.AvailIdx); // published all the same

        ring.UsedFlags = 0;
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.True(q.Publish());
    }

    [Fact]
    public void Publish_with_EVENT_IDX_notifies_when_avail_event_is_crossed_2_7_10_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver(eventIdx: true);
        ring.UsedFlags = SplitRing.UsedFNoNotify; // 2.7.10.1: MUST ignore the flag with EVENT_IDX

        ring.AvailEvent = 0;
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.True(q.Publish());                 // idx 0 -> 1 wrote entry 0 == avail_event

        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.False(q.Publish());                // 1 -> 2: avail_event 0 already passed

        ring.AvailEvent = 4;
        for (var i = 0; i < 3; i++)
            Assert.True(q.TryAdd([W(0x4000_1000, 8)], out _));
        Assert.True(q.Publish());                 // 2 -> 5 wrote entries 2, 3, 4
        Assert.Equal(5, ring.AvailIdx);
    }

    [Fact]
    public void TryTakeUsed_rejects_ids_that_are_not_outstanding_2_7_8()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver();
        Assert.True(q.TryAdd([R(0x4000_1000, 16), W(0x4000_1010, 1)], out var head));
        q.Publish();

        DeviceReturns(ring, 5, 1);             // a descriptor that is free
        Assert.False(q.TryTakeUsed(out var id, out _, out var error));
        Assert.Equal((UsedError.UnknownId, (ushort)5), (error, id));

        DeviceReturns(ring, 1000, 1);          // past the table
        Assert.False(q.TryTakeUsed(out _, out _, out error));
        Assert.Equal(UsedError.UnknownId, error);

        DeviceReturns(ring, (uint)head + 1, 1); // the second descriptor of a chain is not a head
        Assert.False(q.TryTakeUsed(out _, out _, out error));
        Assert.Equal(UsedError.UnknownId, error);
        Assert.Equal(6, q.FreeDescriptors);    // nothing was freed by the bogus elements

        DeviceReturns(ring, head, 1);
        Assert.True(q.TryTakeUsed(out id, out _, out error));
        Assert.Equal(head, id);
        DeviceReturns(ring, head, 1);          // the same head twice
        Assert.False(q.TryTakeUsed(out _, out _, out error));
        Assert.Equal(UsedError.UnknownId, error);
        Assert.Equal(8, q.FreeDescriptors);
    }

    [Theory]
    [InlineData(9)]
    [InlineData(0x8000)]
    [InlineData(0xffff)]
    public void TryTakeUsed_rejects_a_used_idx_more_than_queue_size_ahead_2_7_8(int usedIdx)
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver();
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var head));
        q.Publish();
        ring.WriteUsedElement(0, head, 8);
        ring.UsedIdx = (ushort)usedIdx;

        Assert.False(q.TryTakeUsed(out _, out _, out var error));
        Assert.Equal(UsedError.UsedIndexTooFarAhead, error);
        Assert.Equal(7, q.FreeDescriptors); // nothing taken

        ring.UsedIdx = 1; // a sane index again: the element is taken normally
        Assert.True(q.TryTakeUsed(out var id, out _, out error));
        Assert.Equal(head, id);
    }

    [Fact]
    public void TryTakeUsed_with_EVENT_IDX_moves_used_event_to_the_next_element_2_7_7_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver(eventIdx: true);
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var a));
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var b));
        q.Publish();
        DeviceReturns(ring, a, 0);
        DeviceReturns(ring, b, 0);

        Assert.True(q.TryTakeUsed(out _, out _, out _));
        Assert.Equal(1, ring.UsedEvent);
        Assert.True(q.TryTakeUsed(out _, out _, out _));
        Assert.Equal(2, ring.UsedEvent);
        Assert.Equal(0, ring.AvailFlags); // 2.7.7.1: flags stay 0 with EVENT_IDX
    }

    [Fact]
    public void With_interrupts_disabled_TryTakeUsed_leaves_used_event_and_EnableInterrupts_rearms_it_2_7_7_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver(eventIdx: true);
        q.DisableInterrupts();
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var a));
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var b));
        q.Publish();
        DeviceReturns(ring, a, 0);
        DeviceReturns(ring, b, 0);
        Assert.True(q.TryTakeUsed(out _, out _, out _));
        Assert.True(q.TryTakeUsed(out _, out _, out _));
        Assert.Equal(0, ring.UsedEvent); // no store (and no barrier) per element while interrupts are off
        Assert.False(q.EnableInterrupts());
        Assert.Equal(2, ring.UsedEvent); // interrupt me when the next element is used
        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var c));
        q.Publish();
        DeviceReturns(ring, c, 0);
        Assert.True(q.TryTakeUsed(out _, out _, out _));
        Assert.Equal(3, ring.UsedEvent); // enabled again: it follows every element
    }

    [Fact]
    public void Interrupt_suppression_without_EVENT_IDX_uses_VIRTQ_AVAIL_F_NO_INTERRUPT_2_7_7_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver(eventIdx: false);
        q.DisableInterrupts();
        Assert.Equal(SplitRing.AvailFNoInterrupt, ring.AvailFlags);
        Assert.False(q.EnableInterrupts());
        Assert.Equal(0, ring.AvailFlags);

        Assert.True(q.TryAdd([W(0x4000_1000, 8)], out var head));
        q.Publish();
        q.DisableInterrupts();
        DeviceReturns(ring, head, 0);
        Assert.True(q.EnableInterrupts()); // used buffers arrived while interrupts were off
    }

    [Fact]
    public void Interrupt_suppression_with_EVENT_IDX_uses_used_event_2_7_7_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver(eventIdx: true);
        ring.UsedEvent = 0x55;
        q.DisableInterrupts();
        Assert.Equal(0, ring.AvailFlags);
        Assert.False(q.EnableInterrupts());
        Assert.Equal(0, ring.UsedEvent); // next element the driver has not seen
    }

    [Fact]
    public void TryAddIndirect_uses_one_descriptor_pointing_at_the_table_2_7_5_3()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Driver();
        var table = ring.Alloc(48);
        var h = ring.Alloc(16);
        var d = ring.Alloc(512);
        var s = ring.Alloc(1);
        SplitDriverQueue.WriteIndirectTable(ring.Span(table, 48), [R(h, 16), W(d, 512), W(s, 1)]);

        Assert.True(q.TryAddIndirect(table, 3, out var head));
        Assert.Equal(7, q.FreeDescriptors);
        var desc = ring.ReadDescriptor(head);
        Assert.Equal((table, 48u, SplitRing.DescFIndirect), (desc.Address, desc.Length, desc.Flags));
        q.Publish();

        // The device, with VIRTIO_F_INDIRECT_DESC, sees the three buffers of the table.
        var dev = ring.Device(indirect: true);
        Assert.Equal(PopResult.Chain, dev.TryPop(out var chain));
        Assert.Equal(ChainError.None, chain.Error);
        Assert.Equal(head, chain.Head);
        Assert.Equal(new[] { (h, 16u, false), (d, 512u, true), (s, 1u, true) },
            chain.Buffers.ToArray().Select(b => (b.Address, b.Length, b.Writable)));

        dev.AddUsed(head, 513);
        Assert.True(q.TryTakeUsed(out var id, out var len, out _));
        Assert.Equal((head, 513u), (id, len));
        Assert.Equal(8, q.FreeDescriptors);
    }

    [Fact]
    public void TryAddIndirect_refuses_an_empty_or_oversized_table_2_7_5_3_1()
    {
        using var ring = new RingBuilder(4);
        var q = ring.Driver();
        Assert.False(q.TryAddIndirect(0x4000_1000, 0, out _));
        Assert.False(q.TryAddIndirect(0x4000_1000, 5, out _)); // longer than the queue size
        Assert.True(q.TryAddIndirect(0x4000_1000, 4, out _));
        Assert.Equal(3, q.FreeDescriptors);
    }

    [Fact]
    public void WriteIndirectTable_links_entries_by_index_with_no_INDIRECT_inside_2_7_5_3()
    {
        var table = new byte[64];
        SplitDriverQueue.WriteIndirectTable(table, [R(0x1000, 16), R(0x2000, 512), W(0x3000, 100), W(0x4000, 1)]);
        for (var i = 0; i < 4; i++)
        {
            var e = table.AsSpan(i * 16, 16);
            var flags = BitConverter.ToUInt16(e[12..]);
            var next = BitConverter.ToUInt16(e[14..]);
            Assert.Equal(0, flags & SplitRing.DescFIndirect);
            Assert.Equal(i < 3, (flags & SplitRing.DescFNext) != 0);
            Assert.Equal(i >= 2, (flags & SplitRing.DescFWrite) != 0);
            Assert.Equal(i < 3 ? i + 1 : 0, next);
        }
    }
}
