using System.Buffers.Binary;
using VirtioSharp.Memory;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Queues;

/// <summary>Layout and flag arithmetic of the packed ring (2.8), section by section.</summary>
public sealed class PackedRingLayoutTests
{
    [Fact]
    public void Descriptor_and_event_suppression_sizes_2_8_13_and_2_8_14()
    {
        Assert.Equal(16, PackedRing.DescriptorSize);
        Assert.Equal(4, PackedRing.EventSuppressionSize);
        Assert.Equal(0x80, PackedRing.DescFAvail);   // 2.8.1: 1 << 7
        Assert.Equal(0x8000, PackedRing.DescFUsed);  // 2.8.1: 1 << 15
        Assert.Equal(1, PackedRing.DescFNext);
        Assert.Equal(2, PackedRing.DescFWrite);
        Assert.Equal(4, PackedRing.DescFIndirect);
        Assert.Equal(0, PackedRing.EventFlagsEnable);
        Assert.Equal(1, PackedRing.EventFlagsDisable);
        Assert.Equal(2, PackedRing.EventFlagsDesc);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(256)]
    [InlineData(1000)]
    [InlineData(32768)]
    public void Layout_places_three_parts_with_their_alignment_2_8_10_1(int size)
    {
        var l = PackedQueueLayout.For(size);
        Assert.Equal(0ul, l.DescriptorRingOffset);
        Assert.Equal(16ul * (ulong)size, l.DriverEventOffset);
        Assert.Equal(l.DriverEventOffset + 4, l.DeviceEventOffset);
        Assert.Equal(l.DeviceEventOffset + 4, l.TotalSize);
        Assert.Equal(0ul, l.DriverEventOffset % 4);
        Assert.Equal(0ul, l.DeviceEventOffset % 4);
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(1, true)]
    [InlineData(5, true)]    // 2.8.10.1: not a power of two, and legal
    [InlineData(32768, true)]
    [InlineData(32769, false)]
    public void Sizes_up_to_32768_any_value_2_8(int size, bool valid) => Assert.Equal(valid, PackedRing.IsValidSize(size));

    [Fact]
    public void Available_and_used_flags_follow_the_wrap_counters_2_8_1()
    {
        // Available: AVAIL = counter, USED = inverse. Used: both = counter.
        Assert.Equal(PackedRing.DescFAvail, PackedRing.AvailFlags(true));
        Assert.Equal(PackedRing.DescFUsed, PackedRing.AvailFlags(false));
        Assert.Equal(PackedRing.DescFAvail | PackedRing.DescFUsed, PackedRing.UsedFlags(true));
        Assert.Equal(0, PackedRing.UsedFlags(false));
        foreach (var w in new[] { true, false })
        {
            Assert.True(PackedRing.IsAvail(PackedRing.AvailFlags(w), w));
            Assert.False(PackedRing.IsAvail(PackedRing.AvailFlags(w), !w));
            Assert.False(PackedRing.IsUsed(PackedRing.AvailFlags(w), w));
            Assert.True(PackedRing.IsUsed(PackedRing.UsedFlags(w), w));
            Assert.False(PackedRing.IsUsed(PackedRing.UsedFlags(w), !w));
            Assert.False(PackedRing.IsAvail(PackedRing.UsedFlags(w), w));
        }
        // The zero-initialized ring (2.8.13) is neither available nor used in the first lap.
        Assert.False(PackedRing.IsAvail(0, true));
        Assert.False(PackedRing.IsUsed(0, true));
    }

    [Fact]
    public void Event_offset_and_wrap_share_16_bits_2_8_14()
    {
        Assert.Equal(0x8005, PackedRing.OffWrap(5, true));
        Assert.Equal(0x7fff, PackedRing.OffWrap(0x7fff, false));
    }

    [Theory]
    // size 8: slots just written end before 'next' in the lap of 'wrap'.
    [InlineData(3, true, 5, true, 4, true)]     // 3 in [1, 5)
    [InlineData(5, true, 5, true, 4, false)]    // the next slot is not yet written
    [InlineData(0, true, 5, true, 4, false)]    // before the batch
    [InlineData(7, true, 2, false, 4, true)]    // the batch crossed the end: 7 of the old lap is -1
    [InlineData(1, false, 2, false, 4, true)]
    [InlineData(2, true, 2, false, 4, false)]   // slot 2 of the old lap was written long ago
    [InlineData(6, true, 6, true, 0, false)]    // nothing written
    public void Descriptor_specific_events_2_8_10(int off, bool offWrap, int next, bool wrap, int count, bool expected) =>
        Assert.Equal(expected, PackedRing.NeedEvent(PackedRing.OffWrap(off, offWrap), next, wrap, count, 8));
}

/// <summary>The two halves of the packed ring together: many laps, both wrap counters, event suppression (2.8).</summary>
public sealed class PackedQueuePairTests
{
    private static readonly (RingStep Step, int Weight)[] Mix =
    [
        (RingStep.Add, 30), (RingStep.Publish, 12), (RingStep.Pop, 20), (RingStep.DeviceSleep, 4),
        (RingStep.Complete, 18), (RingStep.PublishUsed, 8), (RingStep.Take, 18), (RingStep.DriverSleep, 4),
    ];

    private static RingStep Pick(Random rnd)
    {
        var x = rnd.Next(Mix.Sum(m => m.Weight));
        foreach (var (step, weight) in Mix)
        {
            if (x < weight)
                return step;
            x -= weight;
        }
        return RingStep.Add;
    }

    // More than 65,536 requests through small rings, power of two and not: both counters flip many times.
    [Theory]
    [InlineData(1, true, 70_000)]
    [InlineData(4, true, 70_000)]
    [InlineData(4, false, 70_000)]
    [InlineData(5, true, 70_000)]
    [InlineData(7, false, 70_000)]
    [InlineData(100, true, 70_000)]
    public void Random_interleavings_wrap_both_counters_and_lose_nothing_2_8_1(int size, bool eventIdx, int requests)
    {
        using var pair = new PackedQueuePair(size, eventIdx);
        var rnd = new Random(size * 7919 + (eventIdx ? 1 : 0));
        while (pair.Completed < requests)
            pair.Step(Pick(rnd), rnd.Next(1 << 16));
        pair.Drain();

        Assert.True(pair.Added >= requests);
        Assert.True(pair.Notifications > 0 && pair.Interrupts > 0);
        // Each request takes at least one slot: the counters flipped at least requests/size times.
        Assert.True(pair.AvailWraps >= requests / size, $"{pair.AvailWraps} driver wraps");
        Assert.True(pair.UsedWraps >= requests / size, $"{pair.UsedWraps} device wraps");
    }

    // Batches as drivers and devices run them: fill, publish, drain, complete shuffled, interrupt, reap, sleep.
    [Theory]
    [InlineData(3, false, 100_000)]
    [InlineData(6, true, 100_000)]
    [InlineData(256, true, 100_000)]
    public void Batched_traffic_with_out_of_order_completion_2_8_6(int size, bool eventIdx, int requests)
    {
        using var pair = new PackedQueuePair(size, eventIdx);
        var rnd = new Random(size);
        while (pair.Completed < requests)
        {
            while (pair.Add(1 + rnd.Next(Math.Min(3, size)), rnd.Next(3), rnd.Next(5) == 0))
            {
            }
            pair.Step(RingStep.Publish, 0);
            for (var i = 0; i < size && !pair.DeviceAsleep; i++)
                pair.Step(RingStep.Pop, 0);
            pair.Step(RingStep.DeviceSleep, 0);
            while (pair.Device.InFlight > 0)
                pair.Step(RingStep.Complete, rnd.Next());
            pair.Step(RingStep.PublishUsed, 0);
            for (var i = 0; i < size && !pair.DriverAsleep; i++)
                pair.Step(RingStep.Take, 0);
            pair.Step(RingStep.DriverSleep, 0);
        }
        pair.Drain();
        Assert.Equal(pair.Added, pair.Completed);
        Assert.True(pair.UsedWraps > 2 * requests / size / 3);
    }

    [Fact]
    public void A_disabled_device_is_not_notified_and_an_enabled_one_is_2_8_10()
    {
        using var pair = new PackedQueuePair(8, eventIdx: false);
        pair.Device.DisableNotifications();
        Assert.True(pair.Add(2, 1, false));
        Assert.False(pair.Driver.Publish());                   // RING_EVENT_FLAGS_DISABLE
        Assert.True(pair.Device.EnableNotifications());        // the list is there: drain again
        Assert.True(pair.Add(1, 1, false));
        Assert.True(pair.Driver.Publish());                    // RING_EVENT_FLAGS_ENABLE
        Assert.Equal(PackedRing.EventFlagsEnable, pair.Driver.DeviceEvent.Flags);
    }

    [Fact]
    public void Descriptor_specific_notification_names_the_device_position_2_8_10()
    {
        using var pair = new PackedQueuePair(4, eventIdx: true);
        // The device sleeps at slot 0, counter 1, and asks to hear of that descriptor.
        Assert.False(pair.Device.EnableNotifications());
        Assert.Equal((PackedRing.OffWrap(0, true), PackedRing.EventFlagsDesc), pair.Driver.DeviceEvent);
        Assert.True(pair.Add(3, 1, false));
        Assert.True(pair.Driver.Publish());
        // Take it, stay awake (flags DISABLE is not written under EVENT_IDX) and ask for slot 3.
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var chain));
        Assert.Equal(3, chain.Buffers.Length);
        Assert.False(pair.Device.EnableNotifications());
        Assert.Equal(PackedRing.OffWrap(3, true), pair.Driver.DeviceEvent.OffWrap);
        pair.Device.AddUsed(chain.Head, 1);
        Assert.True(pair.Device.PublishUsed()); // the driver asked for slot 0 of lap 1 (its initial event)
        Assert.True(pair.Driver.TryTakeUsed(out _, out var len, out _));
        Assert.Equal(1u, len);
        // The next list starts at slot 3 and wraps to slots 0..: the device hears of it once.
        Assert.True(pair.Driver.TryAdd([new DriverBuffer(PackedQueuePair.RamBase + 0x20_0000, 16, false), new DriverBuffer(PackedQueuePair.RamBase + 0x20_1000, 1, true)], out _));
        Assert.True(pair.Driver.Publish());
        Assert.False(pair.Driver.Publish()); // nothing new
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out chain));
        Assert.Equal(PackedRing.OffWrap(1, false), pair.Device.LastAvailIndex); // the device's expected counter flipped
        Assert.False(pair.Device.EnableNotifications());
        Assert.Equal(PackedRing.OffWrap(1, false), pair.Driver.DeviceEvent.OffWrap);
    }

    [Fact]
    public void With_interrupts_disabled_the_driver_leaves_its_event_structure_alone_and_rearms_it_on_enable_2_8_10()
    {
        using var pair = new PackedQueuePair(4, eventIdx: true);
        pair.Driver.DisableInterrupts();
        var disabled = pair.Driver.DriverEvent;
        Assert.Equal(PackedRing.EventFlagsDisable, disabled.Flags);
        DriverBuffer[] one = [new(PackedQueuePair.RamBase + 0x20_0000, 8, true)];
        for (var i = 0; i < 6; i++) // past the end of the ring: the counter flips, the structure stays
        {
            Assert.True(pair.Driver.TryAdd(one, out _));
            pair.Driver.PublishForPoller();
            Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var chain));
            pair.Device.AddUsed(chain.Head, 1);
            Assert.False(pair.Device.PublishUsed()); // RING_EVENT_FLAGS_DISABLE
            Assert.True(pair.Driver.TryTakeUsed(out _, out _, out _));
            Assert.Equal(disabled, pair.Driver.DriverEvent);
        }
        Assert.False(pair.Driver.EnableInterrupts());
        Assert.Equal((PackedRing.OffWrap(2, false), PackedRing.EventFlagsDesc), pair.Driver.DriverEvent); // slot 2 of lap 0
        Assert.True(pair.Driver.TryAdd(one, out _));
        pair.Driver.PublishForPoller();
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var next));
        pair.Device.AddUsed(next.Head, 1);
        Assert.True(pair.Device.PublishUsed()); // the descriptor the driver named
    }

    [Fact]
    public void The_used_descriptor_overwrites_the_first_slot_of_the_list_with_id_and_len_2_8_6()
    {
        using var pair = new PackedQueuePair(8, eventIdx: false);
        Assert.True(pair.Add(3, 1, false));
        Assert.True(pair.Add(2, 1, false));
        pair.Publish();
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var a));
        var idA = a.Head;
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var b));
        var idB = b.Head;
        // Complete B first: its used descriptor goes in slot 0 (the next used slot), then A's in slot 2.
        pair.Device.AddUsed(idB, 7);
        var d0 = pair.Driver.ReadDescriptor(0);
        Assert.Equal(idB, d0.Id);
        Assert.Equal(7u, d0.Length);
        Assert.Equal(PackedRing.UsedFlags(true) | PackedRing.DescFWrite, d0.Flags);
        pair.Device.AddUsed(idA, 0);
        var d2 = pair.Driver.ReadDescriptor(2);
        Assert.Equal(idA, d2.Id);
        Assert.Equal(PackedRing.UsedFlags(true), d2.Flags); // nothing written: no VIRTQ_DESC_F_WRITE (2.8.3)
        Assert.Equal(PackedRing.OffWrap(5, true), pair.Device.UsedIndex);
        Assert.True(pair.Driver.TryTakeUsed(out var id, out var len, out _));
        Assert.Equal((idB, 7u), (id, len));
        Assert.Equal(2, pair.Driver.NextUsed); // skipped B's other slot
        Assert.True(pair.Driver.TryTakeUsed(out id, out len, out _));
        Assert.Equal((idA, 0u), (id, len));
        Assert.Equal(5, pair.Driver.NextUsed);
    }

    [Fact]
    public void The_first_used_descriptor_of_a_batch_gets_its_flags_when_the_batch_ends_2_8_9()
    {
        using var pair = new PackedQueuePair(8, eventIdx: true);
        DriverBuffer[] one = [new(PackedQueuePair.RamBase + 0x20_0000, 16, true)];
        for (var i = 0; i < 3; i++)
            Assert.True(pair.Driver.TryAdd(one, out _));
        pair.Driver.PublishForPoller();
        var ids = new ushort[3];
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var c));
            ids[i] = c.Head;
            pair.Device.AddUsedToBatch(c.Head, (uint)(i + 1));
        }
        // Every used descriptor is written, the later ones with their flags; the first still
        // carries the driver's available flags, so the driver, which looks only at slot 0, sees none.
        for (var i = 0; i < 3; i++)
            Assert.Equal((ids[i], (uint)(i + 1)), (pair.Driver.ReadDescriptor(i).Id, pair.Driver.ReadDescriptor(i).Length));
        Assert.True(PackedRing.IsAvail(pair.Driver.ReadDescriptor(0).Flags, true));
        Assert.Equal(PackedRing.UsedFlags(true) | PackedRing.DescFWrite, pair.Driver.ReadDescriptor(1).Flags);
        Assert.Equal(PackedRing.UsedFlags(true) | PackedRing.DescFWrite, pair.Driver.ReadDescriptor(2).Flags);
        Assert.False(pair.Driver.TryTakeUsed(out _, out _, out var none));
        Assert.Equal(UsedError.None, none);
        Assert.Equal(PackedRing.OffWrap(3, true), pair.Device.UsedIndex);

        // The batch ends: the first gets its flags, and the decision counts all three (the
        // driver's initial event names slot 0 of lap 1).
        Assert.True(pair.Device.PublishUsed());
        Assert.Equal(PackedRing.UsedFlags(true) | PackedRing.DescFWrite, pair.Driver.ReadDescriptor(0).Flags);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(pair.Driver.TryTakeUsed(out var id, out var len, out _));
            Assert.Equal((ids[i], (uint)(i + 1)), (id, len));
        }
        Assert.False(pair.Device.PublishUsed()); // nothing used since

        // A list returned at once after one left to a batch hands both over.
        Assert.True(pair.Driver.TryAdd(one, out _));
        Assert.True(pair.Driver.TryAdd(one, out _));
        pair.Driver.PublishForPoller();
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var a));
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var b));
        pair.Device.AddUsedToBatch(a.Head, 4);
        Assert.False(pair.Driver.TryTakeUsed(out _, out _, out _));
        pair.Device.AddUsed(b.Head, 5);
        Assert.True(pair.Driver.TryTakeUsed(out var first, out var firstLen, out _));
        Assert.True(pair.Driver.TryTakeUsed(out var second, out var secondLen, out _));
        Assert.Equal((a.Head, 4u, b.Head, 5u), (first, firstLen, second, secondLen));

        // A batch of one that ends without a decision (a polling driver) is handed over too.
        Assert.True(pair.Driver.TryAdd(one, out _));
        pair.Driver.PublishForPoller();
        Assert.Equal(PopResult.Chain, pair.Device.TryPop(out var c1));
        pair.Device.AddUsedToBatch(c1.Head, 6);
        Assert.False(pair.Driver.TryTakeUsed(out _, out _, out _));
        pair.Device.PublishUsedForPoller();
        Assert.True(pair.Driver.TryTakeUsed(out var last, out var lastLen, out _));
        Assert.Equal((c1.Head, 6u), (last, lastLen));
    }

    [Fact]
    public void A_used_descriptor_over_a_list_not_yet_published_is_refused_by_the_driver_2_8_21_1()
    {
        using var pair = new PackedQueuePair(4, eventIdx: false);
        Assert.True(pair.Driver.TryAdd([new DriverBuffer(PackedQueuePair.RamBase + 0x20_0000, 16, true)], out var id));
        // A hostile device writes a used descriptor naming the list into slot 0 before the driver published it.
        Assert.True(pair.Memory.TryGetSpan(pair.Driver.DescriptorTable, 16, out var slot0));
        BinaryPrimitives.WriteUInt16LittleEndian(slot0[12..], id);
        BinaryPrimitives.WriteUInt16LittleEndian(slot0[14..], PackedRing.UsedFlags(true));
        Assert.False(pair.Driver.TryTakeUsed(out var head, out _, out var error));
        Assert.Equal((UsedError.UnknownId, id), (error, head));
        Assert.Equal(3, pair.Driver.FreeDescriptors); // the list is still the driver's
    }

    [Fact]
    public void The_first_descriptor_is_made_available_last_2_8_6()
    {
        using var pair = new PackedQueuePair(4, eventIdx: false);
        Assert.True(pair.Add(3, 1, false));
        // Until the batch is published its first list's first descriptor is not available
        // (the ring is zeroed, 2.8.13), and the device, polling slot 0, sees nothing.
        Assert.Equal(0, pair.Driver.ReadDescriptor(0).Flags);
        Assert.True(PackedRing.IsAvail(pair.Driver.ReadDescriptor(1).Flags, true));
        Assert.Equal(PopResult.Empty, pair.Device.TryPop(out _));
        pair.Publish();
        for (var i = 0; i < 3; i++)
        {
            var d = pair.Driver.ReadDescriptor(i);
            Assert.True(PackedRing.IsAvail(d.Flags, true));
            Assert.Equal(i < 2, (d.Flags & PackedRing.DescFNext) != 0);
            Assert.Equal(i >= 1, (d.Flags & PackedRing.DescFWrite) != 0);
        }
        Assert.Equal(pair.Driver.ReadDescriptor(0).Id, pair.Driver.ReadDescriptor(2).Id); // the id is in the last
    }
}

/// <summary>The device half of the packed ring against rings a test writes by hand, as a broken or hostile driver would.</summary>
public sealed class PackedDeviceQueueTests : IDisposable
{
    private const ulong Base = 0x4000_0000;
    private const ulong DataBase = Base + 0x10_0000;
    private readonly GuestRam _ram = new(Base, 2 << 20);

    public void Dispose() => _ram.Dispose();

    private PackedDeviceQueue Device(int size, bool indirect = true, bool eventIdx = false)
    {
        var l = PackedQueueLayout.For(size);
        return PackedDeviceQueue.Create(0, size, _ram.Memory, Base, Base + l.DriverEventOffset, Base + l.DeviceEventOffset, eventIdx, indirect, out var e)
            ?? throw new InvalidOperationException(e);
    }

    private void Write(int slot, ulong addr, uint len, ushort id, ushort flags)
    {
        var d = _ram.Memory.GetSpan(Base + (ulong)slot * 16, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, addr);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], len);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], id);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], flags);
    }

    private (uint Len, ushort Id, ushort Flags) Read(int slot)
    {
        var d = _ram.Memory.GetSpan(Base + (ulong)slot * 16, 16);
        return (BinaryPrimitives.ReadUInt32LittleEndian(d[8..]), BinaryPrimitives.ReadUInt16LittleEndian(d[12..]), BinaryPrimitives.ReadUInt16LittleEndian(d[14..]));
    }

    private static readonly ushort A = PackedRing.AvailFlags(true);
    private const ushort N = PackedRing.DescFNext, W = PackedRing.DescFWrite, I = PackedRing.DescFIndirect;

    [Fact]
    public void A_list_of_one_descriptor_is_taken_as_the_walk_takes_it_over_two_laps_2_8_6()
    {
        // One queue takes one-descriptor lists by its short path; the other captures lists, which
        // sends every list through the walk. Both read the same ring and must agree on everything.
        var fast = Device(3);
        var walked = Device(3);
        walked.CaptureLists();
        (ushort Head, ChainError Error, int ErrorDescriptor) Same(PopResult expected)
        {
            var r1 = fast.TryPop(out var a);
            var r2 = walked.TryPop(out var b);
            Assert.Equal(expected, r1);
            Assert.Equal(expected, r2);
            if (expected == PopResult.RingCorrupt)
                Assert.Equal((walked.LastRingError, walked.LastRingErrorValue), (fast.LastRingError, fast.LastRingErrorValue));
            if (expected != PopResult.Chain)
                return default;
            Assert.Equal((b.Head, b.Error, b.ErrorDescriptor, b.Format), (a.Head, a.Error, a.ErrorDescriptor, a.Format));
            Assert.Equal(b.Buffers.Length, a.Buffers.Length);
            for (var i = 0; i < a.Buffers.Length; i++)
                Assert.Equal(b.Buffers[i], a.Buffers[i]);
            Assert.Equal(walked.BufferId(b.Head), fast.BufferId(a.Head));
            Assert.Equal(walked.LastAvailIndex, fast.LastAvailIndex);
            Assert.Equal((walked.InFlight, walked.SlotsInFlight), (fast.InFlight, fast.SlotsInFlight));
            return (a.Head, a.Error, a.ErrorDescriptor);
        }

        // Lap 1 (wrap counter 1): a readable buffer, a buffer outside guest memory with an id above
        // the size, and a writable one in the ring's last slot.
        Write(0, DataBase, 16, 5, A);
        Write(1, Base + (4 << 20), 16, 40000, (ushort)(A | W));
        Write(2, DataBase + 64, 8, 1, (ushort)(A | W));
        var lists = new[] { Same(PopResult.Chain), Same(PopResult.Chain), Same(PopResult.Chain) };
        Assert.Equal((ChainError.None, ChainError.BufferOutOfMemory, 1, ChainError.None), (lists[0].Error, lists[1].Error, lists[1].ErrorDescriptor, lists[2].Error));
        Assert.Equal(PackedRing.OffWrap(0, false), fast.LastAvailIndex); // the counter flipped after slot 2
        Same(PopResult.Empty);
        foreach (var q in new[] { fast, walked })
        {
            foreach (var l in lists)
                q.AddUsed(l.Head, 0);
        }
        Assert.Equal((0u, (ushort)1, PackedRing.UsedFlags(true)), Read(2));

        // Lap 2 (wrap counter 0): id 2, then id 2 again while it is in flight.
        var a2 = PackedRing.AvailFlags(false);
        Write(0, DataBase, 16, 2, (ushort)(a2 | W));
        Write(1, DataBase, 16, 2, (ushort)(a2 | W));
        Same(PopResult.Chain);
        Same(PopResult.RingCorrupt);
        Assert.Equal((RingError.PackedBufferIdInFlight, 2), (fast.LastRingError, fast.LastRingErrorValue));
    }

    [Fact]
    public void A_buffer_id_above_the_queue_size_is_served_and_returned_2_8_13()
    {
        var q = Device(4);
        Write(0, DataBase, 16, 999, (ushort)(A | N));
        Write(1, DataBase + 16, 1, 999, (ushort)(A | W));
        Assert.Equal(PopResult.Chain, q.TryPop(out var c));
        Assert.Equal(999, q.BufferId(c.Head));
        q.AddUsed(c.Head, 1);
        Assert.Equal((1u, (ushort)999, (ushort)(PackedRing.UsedFlags(true) | W)), Read(0));
    }

    [Fact]
    public void Zeroed_and_previous_lap_slots_are_empty_2_8_1()
    {
        var q = Device(4);
        Assert.Equal(PopResult.Empty, q.TryPop(out _));
        Write(0, DataBase, 16, 0, PackedRing.AvailFlags(false)); // available for the next lap, not this one
        Assert.Equal(PopResult.Empty, q.TryPop(out _));
    }

    [Fact]
    public void Used_looking_flags_at_the_device_position_are_a_corrupt_ring_2_8_1()
    {
        var q = Device(4);
        Write(0, DataBase, 16, 0, PackedRing.UsedFlags(true));
        Assert.Equal(PopResult.RingCorrupt, q.TryPop(out _));
        Assert.Equal(RingError.PackedFlagsInconsistent, q.LastRingError);
    }

    [Fact]
    public void A_later_descriptor_not_marked_available_is_a_corrupt_ring_2_8_6()
    {
        var q = Device(4);
        Write(0, DataBase, 16, 0, (ushort)(A | N));
        Write(1, DataBase, 1, 0, W); // neither AVAIL nor USED for this lap
        Assert.Equal(PopResult.RingCorrupt, q.TryPop(out _));
        Assert.Equal(RingError.PackedDescriptorNotAvailable, q.LastRingError);
        Assert.Equal(1, q.LastRingErrorValue);
        Assert.Equal(0, q.InFlight);
    }

    [Fact]
    public void Next_on_every_slot_is_a_corrupt_ring_and_the_walk_ends_2_8_17()
    {
        var q = Device(3);
        for (var i = 0; i < 3; i++)
            Write(i, DataBase, 16, 0, (ushort)(A | N));
        Assert.Equal(PopResult.RingCorrupt, q.TryPop(out _));
        Assert.Equal(RingError.PackedChainTooLong, q.LastRingError);
    }

    [Fact]
    public void A_buffer_id_offered_again_while_in_flight_is_a_corrupt_ring_2_8_21_1()
    {
        var q = Device(4);
        Write(0, DataBase, 1, 7, (ushort)(A | W));
        Write(1, DataBase, 1, 7, (ushort)(A | W));
        Assert.Equal(PopResult.Chain, q.TryPop(out _));
        Assert.Equal(PopResult.RingCorrupt, q.TryPop(out _));
        Assert.Equal(RingError.PackedBufferIdInFlight, q.LastRingError);
        Assert.Equal(7, q.LastRingErrorValue);
    }

    [Fact]
    public void A_list_made_available_over_slots_in_flight_is_a_corrupt_ring_2_8_16()
    {
        var q = Device(2);
        Write(0, DataBase, 1, 0, (ushort)(A | W));
        Write(1, DataBase, 1, 1, (ushort)(A | W));
        Assert.Equal(PopResult.Chain, q.TryPop(out _));
        Assert.Equal(PopResult.Chain, q.TryPop(out _));
        // Both slots are the device's; the driver rewrites slot 0 as available in the next lap.
        Write(0, DataBase, 1, 2, (ushort)(PackedRing.AvailFlags(false) | W));
        Assert.Equal(PopResult.RingCorrupt, q.TryPop(out _));
        Assert.Equal(RingError.PackedRingOverrun, q.LastRingError);
    }

    [Fact]
    public void An_indirect_table_is_read_in_the_packed_layout_2_8_7()
    {
        var q = Device(4);
        var table = _ram.Memory.GetSpan(DataBase + 0x1000, 48);
        PackedDriverQueue.WriteIndirectTable(table, [new DriverBuffer(DataBase, 16, false), new DriverBuffer(DataBase + 512, 512, true), new DriverBuffer(DataBase + 64, 1, true)]);
        Write(0, DataBase + 0x1000, 48, 3, (ushort)(A | I));
        Assert.Equal(PopResult.Chain, q.TryPop(out var c));
        Assert.Equal(ChainError.None, c.Error);
        Assert.Equal(3, c.Buffers.Length);
        Assert.Equal((DataBase + 512, 512u, true), (c.Buffers[1].Address, c.Buffers[1].Length, c.Buffers[1].Writable));
        Assert.Equal(PackedRing.OffWrap(1, true), q.LastAvailIndex);
    }

    [Theory]
    [InlineData(false, 48, (ushort)0, ChainError.IndirectNotNegotiated, "2.8.19")]
    [InlineData(true, 40, (ushort)0, ChainError.IndirectBadLength, "2.8.7")]
    [InlineData(true, 48, N, ChainError.IndirectWithNext, "2.8.19")]
    [InlineData(true, 16 * 5, (ushort)0, ChainError.ChainTooLong, "2.8.17")]
    public void A_malformed_indirect_list_still_gets_its_used_descriptor_2_8_7(bool negotiated, uint len, ushort extra, ChainError expected, string section)
    {
        var q = Device(4, indirect: negotiated);
        Write(0, DataBase + 0x1000, len, 2, (ushort)(A | I | extra));
        if (extra == N)
            Write(1, DataBase, 1, 2, (ushort)(A | W));
        Assert.Equal(PopResult.Chain, q.TryPop(out var c));
        Assert.Equal(expected, c.Error);
        Assert.True(c.IsStructurallyBroken);
        Assert.Equal(section, c.Error.Section(c.Format));
        Assert.Equal(2, q.BufferId(c.Head));
        q.AddUsed(c.Head, 0);
        Assert.Equal((0u, (ushort)2, PackedRing.UsedFlags(true)), Read(0));
        Assert.Equal(0, q.InFlight);
    }

    [Fact]
    public void An_indirect_table_outside_guest_memory_is_an_error_not_a_read_2_8_4()
    {
        var q = Device(4);
        Write(0, 0x10, 32, 1, (ushort)(A | I));
        Assert.Equal(PopResult.Chain, q.TryPop(out var c));
        Assert.Equal(ChainError.IndirectOutOfMemory, c.Error);
    }

    [Fact]
    public void A_buffer_ending_at_the_last_byte_of_ram_is_inside_and_one_past_is_not_2_8_4()
    {
        var q = Device(4);
        var end = Base + (2 << 20);
        Write(0, end - 16, 16, 0, (ushort)(A | N));
        Write(1, end - 1, 2, 0, (ushort)(A | W));
        Assert.Equal(PopResult.Chain, q.TryPop(out var c));
        Assert.NotEqual(0, c.Buffers[0].Host);
        Assert.Equal(0, c.Buffers[1].Host);
        Assert.Equal(ChainError.BufferOutOfMemory, c.Error);
        Assert.Equal(1, c.ErrorDescriptor);
    }

    [Fact]
    public void Misaligned_parts_and_saved_positions_past_the_ring_are_refused_2_8_10_1()
    {
        Assert.Null(PackedDeviceQueue.Create(0, 4, _ram.Memory, Base + 8, Base + 64, Base + 68, false, false, out var e1));
        Assert.Contains("2.8.10.1", e1);
        Assert.Null(PackedDeviceQueue.Create(0, 4, _ram.Memory, Base, Base + 66, Base + 72, false, false, out _));
        Assert.Null(PackedDeviceQueue.Create(0, 4, _ram.Memory, Base, Base + 64, Base + 68, false, false, out _, availState: 0x8004));
        Assert.NotNull(PackedDeviceQueue.Create(0, 5, _ram.Memory, Base, Base + 80, Base + 84, false, false, out _, availState: 0x0004));
    }
}

/// <summary>The driver's half starts its ring afresh for a new device (a vhost-user back-end that came back).</summary>
public sealed class PackedDriverRestartTests : IDisposable
{
    private const ulong Base = 0x4000_0000;
    private const int Size = 5;
    private readonly GuestRam _ram = new(Base, 1 << 20);
    private readonly PackedQueueLayout _layout = PackedQueueLayout.For(Size);

    public void Dispose() => _ram.Dispose();

    private PackedDeviceQueue NewDevice() =>
        PackedDeviceQueue.Create(0, Size, _ram.Memory, Base, Base + _layout.DriverEventOffset, Base + _layout.DeviceEventOffset, eventIdx: true, indirect: false, out var e)
        ?? throw new InvalidOperationException(e);

    private static DriverBuffer[] Two(int i) => [new(Base + 0x1000 + (ulong)i * 0x100, 16, false), new(Base + 0x8000 + (ulong)i, 1, true)];

    private static void RoundTrip(PackedDriverQueue driver, PackedDeviceQueue device, int i)
    {
        Assert.True(driver.TryAdd(Two(i), out var id));
        driver.Publish();
        Assert.Equal(PopResult.Chain, device.TryPop(out var chain));
        device.AddUsed(chain.Head, 1);
        device.PublishUsed();
        Assert.True(driver.TryTakeUsed(out var back, out _, out var error), error.ToString());
        Assert.Equal(id, back);
    }

    [Fact]
    public void A_restarted_ring_is_zeroed_at_slot_0_with_both_counters_1_and_serves_a_new_device_2_8_1()
    {
        var driver = new PackedDriverQueue(0, Size, _ram.Memory, Base, Base + _layout.DriverEventOffset, Base + _layout.DeviceEventOffset, eventIdx: true);
        var old = NewDevice();
        for (var i = 0; i < 7; i++) // 14 slots: the 5-slot ring's counters flipped twice
            RoundTrip(driver, old, i);
        // Two lists left with the device, which dies while polling (notifications disabled).
        Assert.True(driver.TryAdd(Two(7), out _));
        Assert.True(driver.TryAdd(Two(8), out _));
        driver.Publish();
        Assert.Equal(PopResult.Chain, old.TryPop(out _));
        old.DisableNotifications();

        driver.Restart();
        Assert.Equal((0, true, 0, true), (driver.NextAvail, driver.AvailWrapCounter, driver.NextUsed, driver.UsedWrapCounter));
        Assert.Equal(Size, driver.FreeDescriptors);
        Assert.Equal(((ushort)0, (ushort)0), driver.DeviceEvent); // 2.8.10: ENABLE, not the dead device's DISABLE
        Assert.Equal((PackedRing.OffWrap(0, true), PackedRing.EventFlagsDesc), driver.DriverEvent);
        for (var s = 0; s < Size; s++)
            Assert.Equal(0, driver.ReadDescriptor(s).Flags); // 2.8.13: zeroed, nothing available

        var fresh = NewDevice(); // at slot 0 with both counters 1, as SET_VRING_BASE 0x80008000 says
        for (var i = 0; i < 9; i++)
            RoundTrip(driver, fresh, i);
        Assert.Equal(PackedRing.OffWrap(18 % Size, false), fresh.UsedIndex); // 18 slots: three laps
    }
}
