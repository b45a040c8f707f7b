using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>The device half of the split ring (2.7) against rings a test writes by hand.</summary>
public sealed class SplitDeviceQueueTests
{
    private const ushort Next = SplitRing.DescFNext;
    private const ushort Write = SplitRing.DescFWrite;
    private const ushort Indirect = SplitRing.DescFIndirect;

    private sealed record Popped(PopResult Result, ushort Head, ChainBuffer[] Buffers, ChainError Error, int ErrorDescriptor, bool Broken);

    private static Popped Pop(IDeviceQueue q)
    {
        var r = q.TryPop(out var chain);
        return new Popped(r, chain.Head, chain.Buffers.ToArray(), chain.Error, chain.ErrorDescriptor, r == PopResult.Chain && chain.IsStructurallyBroken);
    }

    private static Popped PopOne(RingBuilder ring, SplitDeviceQueue q, ushort head)
    {
        ring.Offer(head);
        var p = Pop(q);
        Assert.Equal(PopResult.Chain, p.Result);
        Assert.Equal(head, p.Head);
        return p;
    }

    // ------------------------------------------------------------ well-formed chains

    [Fact]
    public void Pops_a_well_formed_chain_with_every_buffer_translated_2_7_5()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var h = ring.Alloc(16);
        var d = ring.Alloc(512);
        var s = ring.Alloc(1);
        var head = ring.Chain(3, Buf.R(h, 16), Buf.W(d, 512), Buf.W(s, 1));

        Assert.Equal(PopResult.Empty, Pop(q).Result);
        var p = PopOne(ring, q, head);

        Assert.Equal(ChainError.None, p.Error);
        Assert.Equal(-1, p.ErrorDescriptor);
        Assert.Equal(3, p.Buffers.Length);
        Assert.Equal((h, 16u, false), (p.Buffers[0].Address, p.Buffers[0].Length, p.Buffers[0].Writable));
        Assert.Equal((d, 512u, true), (p.Buffers[1].Address, p.Buffers[1].Length, p.Buffers[1].Writable));
        Assert.Equal((s, 1u, true), (p.Buffers[2].Address, p.Buffers[2].Length, p.Buffers[2].Writable));
        Assert.Equal(ring.Memory.GetPointer(d, 512), p.Buffers[1].Host);
        Assert.Equal(1, q.InFlight);
        Assert.True(q.IsInFlight(head));
        Assert.Equal(1, q.LastAvailIndex);
        Assert.Equal(PopResult.Empty, Pop(q).Result);
    }

    [Fact]
    public void A_chain_of_exactly_queue_size_descriptors_is_accepted_2_7_5()
    {
        using var ring = new RingBuilder(4);
        var q = ring.Device();
        var a = ring.Alloc(64);
        var head = ring.Chain(0, Buf.R(a, 16), Buf.R(a + 16, 16), Buf.W(a + 32, 16), Buf.W(a + 48, 16));
        var p = PopOne(ring, q, head);
        Assert.Equal(ChainError.None, p.Error);
        Assert.Equal(4, p.Buffers.Length);
    }

    // ------------------------------------------------------------ loops and bad next

    [Fact]
    public void A_two_descriptor_loop_is_rejected_as_too_long_2_7_5_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var a = ring.Alloc(32);
        ring.WriteDescriptor(0, a, 16, Next, 1);
        ring.WriteDescriptor(1, a + 16, 16, Next, 0);

        var p = PopOne(ring, q, 0);

        Assert.Equal(ChainError.ChainTooLong, p.Error);
        Assert.True(p.Broken);
        Assert.True(p.Buffers.Length <= ring.Size);
    }

    [Fact]
    public void A_descriptor_pointing_at_itself_is_rejected_as_too_long_2_7_5_2()
    {
        using var ring = new RingBuilder(32768, 2 << 20);
        var q = ring.Device();
        ring.WriteDescriptor(5, ring.Alloc(16), 16, Next, 5);
        var p = PopOne(ring, q, 5);
        Assert.Equal(ChainError.ChainTooLong, p.Error);
        Assert.True(p.Buffers.Length <= ring.Size); // the walk is bounded by the queue size
    }

    [Theory]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(0xffff)]
    public void Next_past_the_descriptor_table_is_rejected_2_7_5(ushort next)
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var a = ring.Alloc(16);
        ring.WriteDescriptor(2, a, 16, Next, next);
        var p = PopOne(ring, q, 2);
        Assert.Equal(ChainError.NextOutOfRange, p.Error);
        Assert.Equal(2, p.ErrorDescriptor);
        Assert.True(p.Broken);
    }

    // ------------------------------------------------------------ indirect descriptors (2.7.5.3)

    [Fact]
    public void An_indirect_table_is_walked_and_the_write_flag_on_its_descriptor_ignored_2_7_5_3_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var h = ring.Alloc(16);
        var d = ring.Alloc(512);
        var s = ring.Alloc(1);
        var table = ring.IndirectTable(Buf.R(h, 16), Buf.W(d, 512), Buf.W(s, 1));
        // 2.7.5.3.2: the device MUST ignore VIRTQ_DESC_F_WRITE on the descriptor that refers to the table.
        ring.WriteDescriptor(6, table, 48, Indirect | Write, 0);

        var p = PopOne(ring, q, 6);

        Assert.Equal(ChainError.None, p.Error);
        Assert.Equal(new[] { h, d, s }, p.Buffers.Select(b => b.Address));
        Assert.Equal(new[] { false, true, true }, p.Buffers.Select(b => b.Writable));
    }

    [Fact]
    public void Direct_descriptors_followed_by_an_indirect_one_are_handled_2_7_5_3_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var h = ring.Alloc(16);
        var d = ring.Alloc(512);
        var s = ring.Alloc(1);
        var table = ring.IndirectTable(Buf.W(d, 512), Buf.W(s, 1));
        ring.WriteDescriptor(0, h, 16, Next, 1);
        ring.WriteDescriptor(1, table, 32, Indirect, 0);

        var p = PopOne(ring, q, 0);

        Assert.Equal(ChainError.None, p.Error);
        Assert.Equal(new[] { h, d, s }, p.Buffers.Select(b => b.Address));
    }

    [Fact]
    public void Indirect_without_VIRTIO_F_INDIRECT_DESC_is_rejected_2_7_5_3_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: false);
        var table = ring.IndirectTable(Buf.R(ring.Alloc(16), 16), Buf.W(ring.Alloc(1), 1));
        ring.WriteDescriptor(0, table, 32, Indirect, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.IndirectNotNegotiated, p.Error);
        Assert.Equal(0, p.ErrorDescriptor);
        Assert.True(p.Broken);
    }

    [Fact]
    public void Indirect_together_with_next_is_rejected_2_7_5_3_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var table = ring.IndirectTable(Buf.R(ring.Alloc(16), 16), Buf.W(ring.Alloc(1), 1));
        ring.WriteDescriptor(0, table, 32, Indirect | Next, 1);
        ring.WriteDescriptor(1, ring.Alloc(1), 1, Write, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.IndirectWithNext, p.Error);
        Assert.True(p.Broken);
    }

    [Fact]
    public void Indirect_inside_an_indirect_table_is_rejected_2_7_5_3_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var inner = ring.IndirectTable(Buf.R(ring.Alloc(16), 16), Buf.W(ring.Alloc(1), 1));
        var outer = ring.Alloc(32);
        ring.WriteDescriptorAt(outer, ring.Alloc(16), 16, Next, 1);
        ring.WriteDescriptorAt(outer + 16, inner, 32, Indirect, 0);
        ring.WriteDescriptor(0, outer, 32, Indirect, 0);

        var p = PopOne(ring, q, 0);

        Assert.Equal(ChainError.NestedIndirect, p.Error);
        Assert.Equal(1, p.ErrorDescriptor); // index inside the table it belongs to
        Assert.True(p.Broken);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(17u)]
    [InlineData(24u)]
    [InlineData(47u)]
    public void Indirect_table_length_zero_or_not_a_multiple_of_16_is_rejected_2_7_5_3_1(uint length)
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var table = ring.IndirectTable(Buf.R(ring.Alloc(16), 16), Buf.W(ring.Alloc(1), 1), Buf.W(ring.Alloc(1), 1));
        ring.WriteDescriptor(0, table, length, Indirect, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.IndirectBadLength, p.Error);
        Assert.True(p.Broken);
    }

    [Fact]
    public void Indirect_table_outside_guest_memory_is_rejected_2_7_5_3()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);

        ring.WriteDescriptor(0, ring.RamEnd - 16, 32, Indirect, 0);   // second entry past the end
        ring.WriteDescriptor(1, 0x1000, 32, Indirect, 0);             // below RAM
        ring.WriteDescriptor(2, ulong.MaxValue - 15, 32, Indirect, 0); // address + length wraps
        foreach (ushort head in new ushort[] { 0, 1, 2 })
        {
            var p = PopOne(ring, q, head);
            Assert.Equal(ChainError.IndirectOutOfMemory, p.Error);
            Assert.True(p.Broken);
        }
    }

    [Fact]
    public void Indirect_table_ending_at_the_last_byte_of_RAM_is_accepted_2_7_5_3()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var table = ring.RamEnd - 32;
        ring.WriteDescriptorAt(table, ring.Alloc(16), 16, Next, 1);
        ring.WriteDescriptorAt(table + 16, ring.Alloc(1), 1, Write, 0);
        ring.WriteDescriptor(0, table, 32, Indirect, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.None, p.Error);
        Assert.Equal(2, p.Buffers.Length);
    }

    // 2.7.5.3.1: a chain may be as long as the queue size, also when it lives in an indirect table.
    [Theory]
    [InlineData(4)]
    [InlineData(256)]
    public void An_indirect_table_of_exactly_queue_size_entries_is_accepted_2_7_5_3_1(int size)
    {
        using var ring = new RingBuilder(size, 4 << 20);
        var q = ring.Device(indirect: true);
        var data = ring.Alloc(16 * size);
        var buffers = Enumerable.Range(0, size).Select(i => new Buf(data + (ulong)(16 * i), 16, i == size - 1)).ToArray();
        var table = ring.IndirectTable(buffers);
        ring.WriteDescriptor(0, table, (uint)(16 * size), Indirect, 0);

        var p = PopOne(ring, q, 0);

        Assert.Equal(ChainError.None, p.Error);
        Assert.Equal(size, p.Buffers.Length);
    }

    [Fact]
    public void An_indirect_table_longer_than_the_queue_size_is_rejected_2_7_5_3_1()
    {
        using var ring = new RingBuilder(4);
        var q = ring.Device(indirect: true);
        var data = ring.Alloc(16 * 5);
        var table = ring.IndirectTable(Enumerable.Range(0, 5).Select(i => new Buf(data + (ulong)(16 * i), 16)).ToArray());
        ring.WriteDescriptor(0, table, 16 * 5, Indirect, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.ChainTooLong, p.Error);
        Assert.True(p.Broken);
    }

    [Fact]
    public void A_loop_inside_an_indirect_table_ends_2_7_5_3_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var table = ring.Alloc(32);
        ring.WriteDescriptorAt(table, ring.Alloc(16), 16, Next, 1);
        ring.WriteDescriptorAt(table + 16, ring.Alloc(16), 16, Next, 0);
        ring.WriteDescriptor(0, table, 32, Indirect, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.ChainTooLong, p.Error);
        Assert.True(p.Buffers.Length <= ring.Size);
    }

    [Fact]
    public void Next_past_the_end_of_an_indirect_table_is_rejected_2_7_5_3()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(indirect: true);
        var table = ring.Alloc(32);
        ring.WriteDescriptorAt(table, ring.Alloc(16), 16, Next, 1);
        ring.WriteDescriptorAt(table + 16, ring.Alloc(16), 16, Next, 2); // the table has 2 entries
        ring.WriteDescriptor(0, table, 32, Indirect, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.NextOutOfRange, p.Error);
        Assert.Equal(1, p.ErrorDescriptor);
    }

    // ------------------------------------------------------------ buffers and guest memory

    [Fact]
    public void A_buffer_ending_exactly_at_the_last_byte_of_RAM_is_accepted_and_one_byte_more_is_not_2_7_5()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        ring.WriteDescriptor(0, ring.RamEnd - 512, 512, Write, 0);
        ring.WriteDescriptor(1, ring.RamEnd - 511, 512, Write, 0);
        ring.WriteDescriptor(2, ring.RamEnd - 1, 1, Write, 0);

        var fits = PopOne(ring, q, 0);
        Assert.Equal(ChainError.None, fits.Error);
        Assert.Equal(ring.Memory.GetPointer(ring.RamEnd - 512, 512), fits.Buffers[0].Host);

        var over = PopOne(ring, q, 1);
        Assert.Equal(ChainError.BufferOutOfMemory, over.Error);
        Assert.Equal(0, over.Buffers[0].Host);
        Assert.False(over.Broken); // the chain's shape is intact: a status byte may still be written

        var lastByte = PopOne(ring, q, 2);
        Assert.Equal(ChainError.None, lastByte.Error);
    }

    [Fact]
    public void Buffers_outside_guest_memory_are_flagged_not_translated_2_7_5()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        ring.WriteDescriptor(0, ring.Alloc(16), 16, Next, 1);
        ring.WriteDescriptor(1, ulong.MaxValue - 100, 512, Next, 2); // wraps past 2^64
        ring.WriteDescriptor(2, ring.Alloc(1), 1, Write, 0);
        var p = PopOne(ring, q, 0);
        Assert.Equal(ChainError.BufferOutOfMemory, p.Error);
        Assert.Equal(1, p.ErrorDescriptor);
        Assert.Equal(3, p.Buffers.Length); // the walk went on, so the status byte is known
        Assert.NotEqual(0, p.Buffers[2].Host);

        ring.WriteDescriptor(3, RingBuilder.RamBase - 16, 32, 0, 0); // straddles the start of RAM
        Assert.Equal(ChainError.BufferOutOfMemory, PopOne(ring, q, 3).Error);
    }

    [Fact]
    public void A_device_readable_buffer_after_a_device_writable_one_is_flagged_2_7_4_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var a = ring.Alloc(64);
        var head = ring.Chain(0, Buf.R(a, 16), Buf.W(a + 16, 16), Buf.R(a + 32, 16), Buf.W(a + 48, 1));
        var p = PopOne(ring, q, head);
        Assert.Equal(ChainError.ReadableAfterWritable, p.Error);
        Assert.Equal(2, p.ErrorDescriptor);
        Assert.False(p.Broken);
        Assert.Equal(4, p.Buffers.Length);
    }

    // ------------------------------------------------------------ a corrupt available ring

    [Fact]
    public void Avail_idx_more_than_queue_size_ahead_is_ring_corruption_2_7_13_3()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        for (var i = 0; i < 8; i++)
            ring.Chain(i, Buf.W(ring.Alloc(1), 1));

        ring.AvailIdx = 9;
        Assert.Equal(PopResult.RingCorrupt, Pop(q).Result);
        Assert.Equal(RingError.AvailIndexTooFarAhead, q.LastRingError);
        Assert.Equal(9, q.LastRingErrorValue);
        Assert.Equal(0, q.LastAvailIndex); // nothing was consumed

        ring.AvailIdx = 0xffff; // "behind" the device: also more than 8 ahead modulo 2^16
        Assert.Equal(PopResult.RingCorrupt, Pop(q).Result);

        // Exactly a full ring is legal.
        for (var i = 0; i < 8; i++)
            ring.SetAvailSlot(i, (ushort)i);
        ring.AvailIdx = 8;
        for (var i = 0; i < 8; i++)
            Assert.Equal(PopResult.Chain, Pop(q).Result);
        Assert.Equal(PopResult.Empty, Pop(q).Result);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(0xffff)]
    public void A_head_past_the_descriptor_table_is_ring_corruption_2_7_6(ushort head)
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        ring.Offer(head);
        Assert.Equal(PopResult.RingCorrupt, Pop(q).Result);
        Assert.Equal(RingError.HeadOutOfRange, q.LastRingError);
        Assert.Equal(head, q.LastRingErrorValue);
        Assert.Equal(0, q.InFlight);
    }

    [Fact]
    public void A_head_offered_again_while_in_flight_is_ring_corruption_2_7_13_1()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device();
        var head = ring.Chain(0, Buf.W(ring.Alloc(1), 1));
        ring.Offer(head, head);

        Assert.Equal(PopResult.Chain, Pop(q).Result);
        Assert.Equal(PopResult.RingCorrupt, Pop(q).Result);
        Assert.Equal(RingError.HeadInFlight, q.LastRingError);
        Assert.Equal(head, q.LastRingErrorValue);

        // Once returned, the same head is a new, legal offer.
        q.AddUsed(head, 0);
        Assert.False(q.IsInFlight(head));
        Assert.Equal(PopResult.Chain, Pop(q).Result);
    }

    // ------------------------------------------------------------ used ring (2.7.8)

    [Fact]
    public void AddUsed_writes_id_and_len_then_publishes_idx_2_7_8_2()
    {
        using var ring = new RingBuilder(4);
        var q = ring.Device();
        var heads = new ushort[] { ring.Chain(0, Buf.W(ring.Alloc(8), 8)), ring.Chain(1, Buf.W(ring.Alloc(8), 8)), ring.Chain(2, Buf.W(ring.Alloc(8), 8)) };
        ring.Offer(heads);
        for (var i = 0; i < 3; i++)
            Assert.Equal(PopResult.Chain, Pop(q).Result);
        Assert.Equal(3, q.InFlight);

        // Completion out of order: the used ring records ids as the device finishes them.
        q.AddUsed(2, 7);
        Assert.Equal(1, ring.UsedIdx);
        q.AddUsed(0, 8);
        q.AddUsed(1, 0);

        Assert.Equal(3, ring.UsedIdx);
        Assert.Equal((2u, 7u), ring.UsedElement(0));
        Assert.Equal((0u, 8u), ring.UsedElement(1));
        Assert.Equal((1u, 0u), ring.UsedElement(2));
        Assert.Equal(0, q.InFlight);
    }

    // ------------------------------------------------------------ used buffer notifications (2.7.7)

    private static SplitDeviceQueue WithUsed(RingBuilder ring, bool eventIdx, int count, ushort startIndex = 0)
    {
        var q = ring.Device(eventIdx: eventIdx, startIndex: startIndex);
        ring.AvailIdx = startIndex;
        ring.UsedIdx = startIndex;
        for (var i = 0; i < count; i++)
            ring.Offer(ring.Chain(i, Buf.W(ring.Alloc(1), 1)));
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(PopResult.Chain, Pop(q).Result);
        }
        return q;
    }

    [Fact]
    public void Without_EVENT_IDX_the_device_notifies_unless_VIRTQ_AVAIL_F_NO_INTERRUPT_2_7_7_2()
    {
        using var ring = new RingBuilder(8);
        var q = WithUsed(ring, eventIdx: false, count: 3);
        ring.UsedEvent = 100; // 2.7.7.2: MUST ignore used_event

        Assert.False(q.PublishUsed()); // nothing used yet
        q.AddUsed(0, 1);
        Assert.True(q.PublishUsed());
        Assert.False(q.PublishUsed()); // nothing new since

        ring.AvailFlags = SplitRing.AvailFNoInterrupt;
        q.AddUsed(1, 1);
        Assert.False(q.PublishUsed());

        ring.AvailFlags = 0;
        q.AddUsed(2, 1);
        Assert.True(q.PublishUsed());
    }

    // 2.7.7.2: with EVENT_IDX, notify when the used idx passes used_event, i.e. the element
    // written at index used_event is part of this batch.
    [Theory]
    [InlineData(0, 0, 1, true)]
    [InlineData(1, 0, 1, false)]
    [InlineData(0, 0, 3, true)]
    [InlineData(2, 0, 3, true)]
    [InlineData(3, 0, 3, false)]
    [InlineData(0xffff, 0, 3, false)] // used_event behind the batch: already notified
    public void With_EVENT_IDX_the_device_notifies_when_used_event_is_crossed_2_7_7_2(int usedEvent, int start, int count, bool expected)
    {
        using var ring = new RingBuilder(8);
        var q = WithUsed(ring, eventIdx: true, count: count, startIndex: (ushort)start);
        ring.UsedEvent = (ushort)usedEvent;
        ring.AvailFlags = SplitRing.AvailFNoInterrupt; // 2.7.7.2: MUST ignore the flag with EVENT_IDX
        for (var i = 0; i < count; i++)
            q.AddUsed((ushort)i, 0);
        Assert.Equal(expected, q.PublishUsed());
    }

    [Theory]
    [InlineData(0xfffd, false)]
    [InlineData(0xfffe, true)]
    [InlineData(0xffff, true)]
    [InlineData(0x0000, true)]
    [InlineData(0x0001, false)]
    public void Used_event_comparison_survives_the_16_bit_wrap_2_7_7_2(int usedEvent, bool expected)
    {
        // Used idx goes 0xfffe -> 0x0001 in one batch of three.
        using var ring = new RingBuilder(8);
        var q = WithUsed(ring, eventIdx: true, count: 3, startIndex: 0xfffe);
        ring.UsedEvent = (ushort)usedEvent;
        for (var i = 0; i < 3; i++)
            q.AddUsed((ushort)i, 0);
        Assert.Equal(1, ring.UsedIdx);
        Assert.Equal((0u, 0u), ring.UsedElement(0xfffe % 8));
        Assert.Equal(expected, q.PublishUsed());
    }

    // ------------------------------------------------------------ available buffer notifications (2.7.10)

    [Fact]
    public void With_EVENT_IDX_EnableNotifications_writes_avail_event_and_reports_pending_work_2_7_10_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(eventIdx: true);
        q.DisableNotifications();
        Assert.Equal(0, ring.UsedFlags); // 2.7.10.2: with EVENT_IDX the device keeps flags 0

        var head = ring.Chain(0, Buf.W(ring.Alloc(1), 1));
        ring.Offer(head);
        Assert.True(q.EnableNotifications()); // a chain is waiting: drain again
        Assert.Equal(0, ring.AvailEvent);

        Assert.Equal(PopResult.Chain, Pop(q).Result);
        Assert.False(q.EnableNotifications());
        Assert.Equal(1, ring.AvailEvent); // notify me when the driver writes ring entry 1
        Assert.Equal(0, ring.UsedFlags);
    }

    [Fact]
    public void Without_EVENT_IDX_notifications_toggle_VIRTQ_USED_F_NO_NOTIFY_2_7_10_2()
    {
        using var ring = new RingBuilder(8);
        var q = ring.Device(eventIdx: false);
        ring.AvailEvent = 0x1234;

        q.DisableNotifications();
        Assert.Equal(SplitRing.UsedFNoNotify, ring.UsedFlags);

        Assert.False(q.EnableNotifications());
        Assert.Equal(0, ring.UsedFlags);
        Assert.Equal(0x1234, ring.AvailEvent); // untouched without EVENT_IDX

        q.DisableNotifications();
        ring.Offer(ring.Chain(0, Buf.W(ring.Alloc(1), 1)));
        Assert.True(q.EnableNotifications());
        Assert.Equal(0, ring.UsedFlags);
    }
}
