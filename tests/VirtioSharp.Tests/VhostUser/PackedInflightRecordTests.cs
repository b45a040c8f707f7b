using System.Buffers.Binary;
using System.Runtime.InteropServices;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Backend;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// The packed ring's inflight record (vhost-user.rst, "Inflight I/O tracking", QueueRegionPacked),
/// read here byte by byte through the document's layout, not through our type:
/// QueueRegionPacked { u64 features; u16 version; u16 desc_num; u16 free_head; u16 old_free_head;
/// u16 used_idx; u16 old_used_idx; u8 used_wrap_counter; u8 old_used_wrap_counter; u8 padding[7];
/// DescStatePacked desc[]; } with desc at byte 32, and
/// DescStatePacked { u8 inflight; u8 padding; u16 next; u16 last; u16 num; u64 counter; u16 id;
/// u16 flags; u32 len; u64 addr; } of 32 bytes.
/// </summary>
public sealed unsafe class PackedInflightRecordTests : IDisposable
{
    private const ushort DescNum = 16;
    private readonly byte* _area = (byte*)NativeMemory.AllocZeroed(32 + 32 * DescNum);

    public void Dispose() => NativeMemory.Free(_area);

    private Span<byte> B => new(_area, 32 + 32 * DescNum);
    private ushort U16(int at) => BinaryPrimitives.ReadUInt16LittleEndian(B[at..]);
    private void SetU16(int at, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(B[at..], v);
    private ushort Version => U16(8);
    private ushort FreeHead => U16(12);
    private ushort OldFreeHead => U16(14);
    private ushort UsedIdx => U16(16);
    private ushort OldUsedIdx => U16(18);
    private byte UsedWrap => B[20];
    private byte OldUsedWrap => B[21];
    private static int E(int i) => 32 + 32 * i;
    private byte Inflight(int i) => B[E(i)];
    private ushort Next(int i) => U16(E(i) + 2);
    private ushort Last(int i) => U16(E(i) + 4);
    private ushort Num(int i) => U16(E(i) + 6);
    private ulong Counter(int i) => BinaryPrimitives.ReadUInt64LittleEndian(B[(E(i) + 8)..]);
    private ushort Id(int i) => U16(E(i) + 16);
    private ushort Flags(int i) => U16(E(i) + 18);
    private uint Len(int i) => BinaryPrimitives.ReadUInt32LittleEndian(B[(E(i) + 20)..]);
    private ulong Addr(int i) => BinaryPrimitives.ReadUInt64LittleEndian(B[(E(i) + 24)..]);

    private PackedInflightRecord NewRecord() => new((nint)_area, DescNum);

    /// <summary>A fresh record for a ring of <paramref name="ringSize"/> at slot 0, both counters 1.</summary>
    private PackedInflightRecord Fresh(ushort ringSize = DescNum, ushort usedState = 0x8000)
    {
        var r = NewRecord();
        Assert.True(r.TryReconcile(ringSize, usedState, _ => 0, out var plan, out var error), error);
        Assert.True(plan.Fresh);
        return r;
    }

    /// <summary>A list as a driver writes it (2.8.6): NEXT on all but the last, the buffer id in each.</summary>
    private static PackedDescriptor[] List(ushort id, int n, ulong addr = 0x1000) =>
        Enumerable.Range(0, n).Select(i => new PackedDescriptor(addr + (ulong)(i * 0x100), (uint)(16 + i), id,
            (ushort)(PackedRing.AvailFlags(true) | (i < n - 1 ? PackedRing.DescFNext : 0) | (i == n - 1 ? PackedRing.DescFWrite : 0)))).ToArray();

    private static ushort Complete(PackedInflightRecord r, ushort entry)
    {
        r.BeginUsed(entry);
        r.EndUsed(entry);
        return entry;
    }

    [Fact]
    public void A_fresh_region_gets_every_entry_on_the_free_list_and_the_front_ends_position()
    {
        Fresh(ringSize: 12, usedState: 0x0005); // slot 5, counter 0
        Assert.Equal((ushort)1, Version);
        Assert.Equal(DescNum, U16(10));
        Assert.Equal((0, 0), (FreeHead, OldFreeHead));
        Assert.All(Enumerable.Range(0, DescNum), i => Assert.Equal(i + 1, Next(i))); // the last points at desc_num: the end
        Assert.Equal((5, 5, 0, 0), (UsedIdx, OldUsedIdx, UsedWrap, OldUsedWrap));
    }

    [Fact]
    public void Taking_a_list_copies_each_descriptor_into_free_entries_and_marks_its_first_in_flight()
    {
        var r = Fresh();
        var a = List(7, 3);
        Assert.Equal((ushort)0, r.Take(a, 41));
        Assert.Equal(1, Inflight(0));
        Assert.Equal((3, 2, 41UL), (Num(0), Last(0), Counter(0)));
        for (var i = 0; i < 3; i++)
            Assert.Equal(a[i], new PackedDescriptor(Addr(i), Len(i), Id(i), Flags(i)));
        Assert.Equal((0, 0), (Inflight(1), Inflight(2))); // only the first entry of a list is flagged
        Assert.Equal((3, 3), (FreeHead, OldFreeHead));
        Assert.Equal((ushort)3, r.Take(List(9, 2), 42));
        Assert.Equal((5, 5), (FreeHead, OldFreeHead));
    }

    [Fact]
    public void Completing_out_of_order_returns_each_lists_entries_to_the_free_list_and_moves_used_idx_by_its_slots()
    {
        var r = Fresh();
        var a = r.Take(List(1, 3), 1); // entries 0-2
        var b = r.Take(List(2, 2), 2); // entries 3-4
        Complete(r, b);                // b's used descriptor goes to slot 0 and skips one more
        Assert.Equal((3, 3), (FreeHead, OldFreeHead));
        Assert.Equal(5, Next(4));      // desc[b.last].next = the old free head
        Assert.Equal((2, 2, 1, 1), (UsedIdx, OldUsedIdx, UsedWrap, OldUsedWrap));
        Assert.Equal((1, 0), (Inflight(a), Inflight(b)));
        // The next list takes b's entries first.
        Assert.Equal((ushort)3, r.Take(List(3, 1), 3));
        Assert.Equal((4, 4), (FreeHead, OldFreeHead));
        Complete(r, a);
        Assert.Equal((5, 5), (UsedIdx, OldUsedIdx));
        Assert.Equal((0, 0), (FreeHead, OldFreeHead));
        Assert.Equal(4, Next(2));
    }

    [Fact]
    public void Used_idx_flips_its_wrap_counter_after_the_rings_last_slot_in_a_ring_that_is_not_a_power_of_two()
    {
        var r = Fresh(ringSize: 7);
        for (var lap = 0; lap < 100; lap++) // 100 lists of 3 slots: 300 slots, 42 laps of 7 and 6 more
            Complete(r, r.Take(List((ushort)(lap % 5), 3), (ulong)lap + 1));
        Assert.Equal((300 % 7, 300 % 7), (UsedIdx, OldUsedIdx));
        var wrap = (byte)((300 / 7 % 2) == 0 ? 1 : 0); // starts at 1, flips every lap
        Assert.Equal((wrap, wrap), (UsedWrap, OldUsedWrap));
        Assert.Equal((ushort)PackedRing.OffWrap(300 % 7, wrap == 1), r.UsedState);
    }

    [Fact]
    public void Lists_left_in_flight_are_resubmitted_from_their_copies_in_counter_order_and_the_ring_resumes_past_their_slots()
    {
        var r = Fresh(ringSize: 8);
        var a = r.Take(List(10, 3, 0x1000), 5);
        var b = r.Take(List(11, 2, 0x2000), 6);
        var c = r.Take(List(12, 1, 0x3000), 7);
        Complete(r, b); // out of order: b done, a and c still in flight (4 slots)
        var next = NewRecord();
        Assert.True(next.TryReconcile(8, 0x8000, _ => 0, out var plan, out var error), error);
        Assert.False(plan.Fresh);
        Assert.Equal(PackedInflightRecord.Settlement.None, plan.Settled);
        Assert.Equal([a, c], plan.Resubmit.Select(p => p.Entry));
        Assert.Equal(List(10, 3, 0x1000), plan.Resubmit[0].Descriptors);
        Assert.Equal(List(12, 1, 0x3000), plan.Resubmit[1].Descriptors);
        Assert.Equal(PackedRing.OffWrap(2, true), plan.UsedState);   // b's 2 slots used
        Assert.Equal(PackedRing.OffWrap(6, true), plan.AvailState);  // + a's 3 and c's 1
        Assert.Equal(8UL, plan.NextCounter);
        // The next back-end carries on with the same record: c done, then a; every entry free again.
        Complete(next, c);
        Complete(next, a);
        Assert.Equal((6, 6), (UsedIdx, OldUsedIdx));
        Assert.True(NewRecord().TryReconcile(8, 0x8000, _ => 0, out var after, out error), error);
        Assert.Empty(after.Resubmit);
        Assert.Equal(after.UsedState, after.AvailState);
    }

    [Fact]
    public void A_list_full_ring_resumes_with_the_available_wrap_counter_flipped()
    {
        var r = Fresh(ringSize: 4);
        r.Take(List(1, 4), 1);
        Assert.True(NewRecord().TryReconcile(4, 0x8000, _ => 0, out var plan, out var error), error);
        Assert.Equal(PackedRing.OffWrap(0, false), plan.AvailState);
        Assert.Equal(PackedRing.OffWrap(0, true), plan.UsedState);
    }

    /// <summary>
    /// Killed after used_idx moved and before old_used_idx caught up: the slot at old_used_idx
    /// decides. Still the driver's descriptor of that lap: the used descriptor never reached the
    /// ring, roll back (the list is done again). Anything else (the used descriptor, or a
    /// descriptor of the next lap the driver wrote after taking it): commit.
    /// </summary>
    [Theory]
    [InlineData("driver's descriptor still there", PackedRing.DescFAvail, false)]
    [InlineData("used descriptor written", PackedRing.DescFAvail | PackedRing.DescFUsed, true)]
    [InlineData("driver reused the slot in the next lap", PackedRing.DescFUsed, true)]
    public void A_completion_cut_short_is_committed_when_the_ring_shows_it_and_rolled_back_otherwise(string _, int slotFlags, bool committed)
    {
        var r = Fresh(ringSize: 8);
        var a = r.Take(List(1, 2), 1);
        var b = r.Take(List(2, 3), 2);
        r.BeginUsed(a); // killed here: EndUsed never ran
        var seen = -1;
        Assert.True(NewRecord().TryReconcile(8, 0x8000, slot => { seen = slot; return (ushort)slotFlags; }, out var plan, out var error), error);
        Assert.Equal(0, seen); // old_used_idx
        Assert.Equal(committed ? PackedInflightRecord.Settlement.Committed : PackedInflightRecord.Settlement.RolledBack, plan.Settled);
        Assert.Equal(committed ? [b] : new[] { a, b }, plan.Resubmit.Select(p => p.Entry));
        Assert.Equal(PackedRing.OffWrap(committed ? 2 : 0, true), plan.UsedState);
        Assert.Equal(PackedRing.OffWrap(5, true), plan.AvailState);
        Assert.Equal(committed ? 2 : 0, UsedIdx);
        Assert.Equal(UsedIdx, OldUsedIdx);
        Assert.Equal(FreeHead, OldFreeHead);
        Assert.Equal(committed ? 0 : 1, Inflight(a)); // a committed completion's flag is cleared from the free list
    }

    [Fact]
    public void A_list_whose_record_was_not_finished_is_dropped_and_read_again_from_the_ring()
    {
        var r = Fresh(ringSize: 8);
        var a = r.Take(List(1, 2), 1);
        r.Take(List(2, 3), 2);
        SetU16(14, 2); // killed before old_free_head = free_head: the second list is not recorded
        Assert.True(NewRecord().TryReconcile(8, 0x8000, _ => 0, out var plan, out var error), error);
        Assert.Equal([a], plan.Resubmit.Select(p => p.Entry));
        Assert.Equal(PackedRing.OffWrap(2, true), plan.AvailState); // the second list's slots are read again
        Assert.Equal((2, 2), (FreeHead, OldFreeHead));
        Assert.Equal(0, Inflight(2)); // its flag, on the free list, is cleared
    }

    public static TheoryData<string, string> BadRecords => new()
    {
        { "version", "version 3" },
        { "desc_num", "desc_num 8" },
        { "used-idx", "used_idx 12 / old_used_idx 0 lies outside the ring of 8" },
        { "wrap", "used_wrap_counter 2" },
        { "free-head", "free_head 40" },
        { "flag", "inflight flag 7" },
        { "free-cycle", "the free list runs in a circle" },
        { "free-past", "the free list reaches entry 300" },
        { "num-zero", "a list of 0 descriptors" },
        { "num-big", "a list of 9 descriptors in a ring of 8" },
        { "counter-zero", "counter 0 is zero" },
        { "counter-shared", "shared with another list in flight" },
        { "chain-into-free", "which is free or part of another list" },
        { "last", "its last field says 9" },
        { "next-flag", "without VIRTQ_DESC_F_NEXT" },
        { "id-shared", "buffer id 1 is shared" },
        { "leak", "entry 15 is neither free nor part of a list in flight" },
        { "too-many-slots", "hold 10 slots, more than the ring's 8" },
    };

    /// <summary>A record that cannot be trusted is refused with a reason, and nothing in it is written.</summary>
    [Theory]
    [MemberData(nameof(BadRecords))]
    public void A_record_that_cannot_be_trusted_is_refused_and_left_as_it_was(string damage, string reason)
    {
        var r = Fresh(ringSize: 8);
        var a = r.Take(List(1, 3), 1); // entries 0-2
        var b = r.Take(List(2, 2), 2); // entries 3-4
        switch (damage)
        {
            case "version": SetU16(8, 3); break;
            case "desc_num": SetU16(10, 8); break;
            case "used-idx": SetU16(16, 12); break;
            case "wrap": B[20] = 2; break;
            case "free-head": SetU16(12, 40); break;
            case "flag": B[E(7)] = 7; break;
            case "free-cycle": SetU16(E(9) + 2, 6); break;
            case "free-past": SetU16(E(9) + 2, 300); break;
            case "num-zero": SetU16(E(b) + 6, 0); break;
            case "num-big": SetU16(E(b) + 6, 9); break;
            case "counter-zero": BinaryPrimitives.WriteUInt64LittleEndian(B[(E(b) + 8)..], 0); break;
            case "counter-shared": BinaryPrimitives.WriteUInt64LittleEndian(B[(E(b) + 8)..], 1); break;
            case "chain-into-free": SetU16(E(a) + 2, 6); break;
            case "last": SetU16(E(b) + 4, 9); break;
            case "next-flag": SetU16(E(a) + 18, 0); break;
            case "id-shared": SetU16(E(4) + 16, 1); break;
            case "leak": SetU16(E(14) + 2, DescNum); break;
            case "too-many-slots":
                // A third list of 5 slots: 10 in a ring of 8.
                SetU16(14, 10); SetU16(12, 10);
                B[E(5)] = 1; SetU16(E(5) + 6, 5); SetU16(E(5) + 4, 9);
                BinaryPrimitives.WriteUInt64LittleEndian(B[(E(5) + 8)..], 3);
                for (var i = 5; i < 10; i++)
                    SetU16(E(i) + 18, i < 9 ? PackedRing.DescFNext : (ushort)0);
                SetU16(E(9) + 16, 3);
                break;
        }
        var before = B.ToArray();
        Assert.False(NewRecord().TryReconcile(8, 0x8000, _ => 0, out _, out var error));
        Assert.Contains(reason, error);
        Assert.Equal(before, B.ToArray());
    }

    [Fact]
    public void A_ring_larger_than_the_record_is_refused()
    {
        Fresh();
        Assert.False(NewRecord().TryReconcile((ushort)(DescNum + 1), 0x8000, _ => 0, out _, out var error));
        Assert.Contains("the ring has 17 entries, the record 16", error);
    }
}
