using System.Runtime.CompilerServices;
using VirtioSharp.Queues;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// One packed queue's region of the inflight area (vhost-user.rst, "Inflight I/O tracking"):
/// <code>
/// QueueRegionPacked { u64 features; u16 version; u16 desc_num; u16 free_head; u16 old_free_head;
///                     u16 used_idx; u16 old_used_idx; u8 used_wrap_counter; u8 old_used_wrap_counter;
///                     u8 padding[7]; DescStatePacked desc[desc_num]; }      (desc at byte 32)
/// DescStatePacked   { u8 inflight; u8 padding; u16 next; u16 last; u16 num; u64 counter;
///                     u16 id; u16 flags; u32 len; u64 addr; }              (32 bytes)
/// </code>
/// Entries are handed out from a free list threaded through next: a list of n ring descriptors
/// takes n entries, each holding a copy of one descriptor (a packed ring's slots are written over
/// by used descriptors while other lists are still in flight, 2.8.6), the first entry also holding
/// the list's length, its last entry, its counter and the inflight flag. The writes happen in the
/// order the document gives, so a process killed between any two leaves a record
/// <see cref="TryReconcile"/> can settle: a completion half done is either committed (its used
/// descriptor reached the ring) or rolled back. The free list, the lists' lengths and ends and the
/// used position are also kept here privately, so nothing the front-end writes into the shared
/// area while a ring runs is ever used as an index; the area is only written. Only program order
/// matters (the reader is a later process), so volatile stores suffice. One ring worker uses it.
/// </summary>
internal sealed unsafe class PackedInflightRecord
{
    public const int HeaderSize = 32;
    public const int EntrySize = 32;
    public const ushort Version = 1;

    private const int VersionOffset = 8, DescNumOffset = 10, FreeHeadOffset = 12, OldFreeHeadOffset = 14,
        UsedIdxOffset = 16, OldUsedIdxOffset = 18, UsedWrapOffset = 20, OldUsedWrapOffset = 21;
    private const int EInflight = 0, ENext = 2, ELast = 4, ENum = 6, ECounter = 8, EId = 16, EFlags = 18, ELen = 20, EAddr = 24;

    private readonly byte* _base;
    // Private copies of what the area says, written through to it, never read back while running.
    private readonly ushort[] _next;
    private readonly ushort[] _last;
    private readonly ushort[] _num;
    private ushort _freeHead;
    private int _freeCount;
    private ushort _usedIdx;
    private bool _usedWrap;
    private ushort _ringSize;

    public PackedInflightRecord(nint address, ushort descNum)
    {
        _base = (byte*)address;
        DescNum = descNum;
        _next = new ushort[descNum];
        _last = new ushort[descNum];
        _num = new ushort[descNum];
    }

    /// <summary>Entries in this region (the queue size of the inflight description); also the end mark of the free list.</summary>
    public ushort DescNum { get; }

    /// <summary>Where the next used descriptor goes, as the record keeps it: slot in bits 0-14, Device Ring Wrap Counter in bit 15.</summary>
    public ushort UsedState => PackedRing.OffWrap(_usedIdx, _usedWrap);

    private ref ushort H16(int offset) => ref *(ushort*)(_base + offset);
    private byte* E(int entry) => _base + HeaderSize + EntrySize * entry;
    private static ref ushort F16(byte* e, int offset) => ref *(ushort*)(e + offset);

    /// <summary>
    /// A list of <paramref name="list"/>.Length descriptors was taken from the ring. Returns its
    /// first entry (the one to name at <see cref="BeginUsed"/>), or <see cref="DescNum"/> when the
    /// free list cannot hold it (not possible while the ring is no larger than the record).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Take(ReadOnlySpan<PackedDescriptor> list, ulong counter)
    {
        var n = list.Length;
        if (n == 0 || n > _freeCount)
            return DescNum;
        var head = _freeHead; // == old_free_head: every take and every completion ends with them equal
        var h = E(head);
        // desc[old_free_head]: num = 0, counter = global counter, inflight = 1.
        Volatile.Write(ref F16(h, ENum), (ushort)0);
        Volatile.Write(ref *(ulong*)(h + ECounter), counter);
        Volatile.Write(ref *(h + EInflight), (byte)1);
        var free = head;
        for (var i = 0; i < n; i++)
        {
            if (i == n - 1)
            {
                Volatile.Write(ref F16(h, ELast), free); // the last descriptor: desc[old_free_head].last = free_head
                _last[head] = free;
            }
            Volatile.Write(ref F16(h, ENum), (ushort)(i + 1));
            var d = list[i];
            var e = E(free);
            Volatile.Write(ref *(ulong*)(e + EAddr), d.Address);
            Volatile.Write(ref *(uint*)(e + ELen), d.Length);
            Volatile.Write(ref F16(e, EFlags), d.Flags);
            Volatile.Write(ref F16(e, EId), d.Id);
            free = _next[free];
            Volatile.Write(ref H16(FreeHeadOffset), free);
        }
        _num[head] = (ushort)n;
        _freeHead = free;
        _freeCount -= n;
        Volatile.Write(ref H16(OldFreeHeadOffset), free); // the list is recorded: old_free_head = free_head
        return head;
    }

    /// <summary>
    /// Before the used descriptor of the list at <paramref name="head"/> is written: its entries go
    /// back on the free list (desc[last].next = free_head; free_head = head), and used_idx moves
    /// past its slots, flipping used_wrap_counter after the ring's last slot (2.8.6).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void BeginUsed(ushort head)
    {
        var last = _last[head];
        Volatile.Write(ref F16(E(last), ENext), _freeHead);
        _next[last] = _freeHead;
        Volatile.Write(ref H16(FreeHeadOffset), head);
        _freeHead = head;
        _freeCount += _num[head];
        var used = _usedIdx + _num[head];
        if (used >= _ringSize)
        {
            used -= _ringSize;
            _usedWrap = !_usedWrap;
        }
        _usedIdx = (ushort)used;
        Volatile.Write(ref H16(UsedIdxOffset), _usedIdx);
        Volatile.Write(ref *(_base + UsedWrapOffset), _usedWrap ? (byte)1 : (byte)0);
    }

    /// <summary>
    /// After the used descriptor's flags are written: inflight = 0, then old_free_head,
    /// old_used_idx and old_used_wrap_counter catch up, in that order (a process killed before the
    /// last of them leaves the used position differing, and the ring then shows the commit).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EndUsed(ushort head)
    {
        Volatile.Write(ref *(E(head) + EInflight), (byte)0);
        Volatile.Write(ref H16(OldFreeHeadOffset), _freeHead);
        Volatile.Write(ref H16(OldUsedIdxOffset), _usedIdx);
        Volatile.Write(ref *(_base + OldUsedWrapOffset), _usedWrap ? (byte)1 : (byte)0);
    }

    /// <summary>A list a previous back-end left in flight: its first entry, and a copy of its descriptors.</summary>
    public readonly record struct Pending(ushort Entry, PackedDescriptor[] Descriptors, ulong Counter);

    /// <summary>
    /// Where a ring resumes: the lists to do again, oldest first; the available position (past
    /// every slot they hold) and the used position, each a slot with its wrap counter in bit 15.
    /// </summary>
    public readonly record struct Plan(Pending[] Resubmit, ushort AvailState, ushort UsedState, ulong NextCounter, bool Fresh, Settlement Settled);

    /// <summary>What became of a completion the last back-end had begun and not finished recording.</summary>
    public enum Settlement { None, Committed, RolledBack }

    /// <summary>
    /// Readies the record for a ring of <paramref name="ringSize"/>. A fresh region (version 0) is
    /// initialised at the front-end's position <paramref name="usedState"/> (every entry on the
    /// free list). Otherwise the region is read once into copies and checked; only then is it
    /// settled as the document says: when used_idx differs from old_used_idx a completion was under
    /// way, and the ring slot at old_used_idx tells whether its used descriptor was written (the
    /// slot no longer holds the driver's descriptor of that lap: commit) or not (roll back);
    /// entries on the free list are not in flight; the rest in flight are done again in the order
    /// of their counters, and the available ring resumes past all their slots.
    /// <paramref name="slotFlags"/> reads a ring slot's flags. Returns false, having written
    /// nothing, when the record cannot be trusted.
    /// </summary>
    public bool TryReconcile(ushort ringSize, ushort usedState, Func<int, ushort> slotFlags, out Plan plan, out string error)
    {
        plan = default;
        error = "";
        if (ringSize == 0 || ringSize > DescNum)
        {
            error = $"the ring has {ringSize} entries, the record {DescNum}";
            return false;
        }
        _ringSize = ringSize;
        var version = Volatile.Read(ref H16(VersionOffset));
        if (version == 0)
        {
            InitialiseFresh(usedState);
            plan = new Plan([], usedState, usedState, 1, Fresh: true, Settlement.None);
            return true;
        }
        if (version != Version)
        {
            error = $"version {version}, not {Version} (another layout)";
            return false;
        }
        var descNum = H16(DescNumOffset);
        if (descNum != DescNum)
        {
            error = $"desc_num {descNum} differs from the queue size {DescNum} of the inflight description";
            return false;
        }
        // The header, read once.
        var freeHead = H16(FreeHeadOffset);
        var oldFreeHead = H16(OldFreeHeadOffset);
        var usedIdx = H16(UsedIdxOffset);
        var oldUsedIdx = H16(OldUsedIdxOffset);
        var usedWrap = *(_base + UsedWrapOffset);
        var oldUsedWrap = *(_base + OldUsedWrapOffset);
        if (usedIdx >= ringSize || oldUsedIdx >= ringSize)
        {
            error = $"used_idx {usedIdx} / old_used_idx {oldUsedIdx} lies outside the ring of {ringSize}";
            return false;
        }
        if (usedWrap > 1 || oldUsedWrap > 1)
        {
            error = $"used_wrap_counter {usedWrap} / old_used_wrap_counter {oldUsedWrap} is neither 0 nor 1";
            return false;
        }
        if (freeHead > DescNum || oldFreeHead > DescNum)
        {
            error = $"free_head {freeHead} / old_free_head {oldFreeHead} lies past the {DescNum} entries";
            return false;
        }

        // Every entry, read once.
        var inflight = new byte[DescNum];
        var next = new ushort[DescNum];
        var last = new ushort[DescNum];
        var num = new ushort[DescNum];
        var counter = new ulong[DescNum];
        var desc = new PackedDescriptor[DescNum];
        for (var i = 0; i < DescNum; i++)
        {
            var e = E(i);
            inflight[i] = Volatile.Read(ref *(e + EInflight));
            next[i] = F16(e, ENext);
            last[i] = F16(e, ELast);
            num[i] = F16(e, ENum);
            counter[i] = *(ulong*)(e + ECounter);
            desc[i] = new PackedDescriptor(*(ulong*)(e + EAddr), *(uint*)(e + ELen), F16(e, EId), F16(e, EFlags));
            if (inflight[i] > 1)
            {
                error = $"entry {i}: inflight flag {inflight[i]} is neither 0 nor 1";
                return false;
            }
        }

        // A completion under way: committed if its used descriptor reached the ring, else rolled back.
        var settled = Settlement.None;
        if (usedIdx != oldUsedIdx || usedWrap != oldUsedWrap)
        {
            var flags = slotFlags(oldUsedIdx);
            settled = PackedRing.IsAvail(flags, oldUsedWrap == 1) ? Settlement.RolledBack : Settlement.Committed;
        }
        if (settled == Settlement.Committed)
            (oldFreeHead, oldUsedIdx, oldUsedWrap) = (freeHead, usedIdx, usedWrap);
        // Anything in progress (a take, a completion) is rolled back to the old_ fields.
        var free = new bool[DescNum];
        var freeCount = 0;
        for (var f = oldFreeHead; f != DescNum; f = next[f])
        {
            if (f > DescNum)
            {
                error = $"the free list reaches entry {f}, past the {DescNum} entries";
                return false;
            }
            if (free[f])
            {
                error = $"the free list runs in a circle at entry {f}";
                return false;
            }
            free[f] = true;
            freeCount++;
        }

        // The lists in flight: heads off the free list with the flag set, each num entries linked by next, ending at last.
        var claimed = (bool[])free.Clone();
        var pending = new List<Pending>();
        var counters = new HashSet<ulong>();
        var ids = new HashSet<ushort>();
        var slots = 0;
        ulong maxCounter = 0;
        for (var h = 0; h < DescNum; h++)
        {
            if (inflight[h] == 0 || free[h])
                continue;
            var n = num[h];
            if (n == 0 || n > ringSize)
            {
                error = $"entry {h}: a list of {n} descriptors in a ring of {ringSize}";
                return false;
            }
            if (counter[h] == 0 || counter[h] == ulong.MaxValue || !counters.Add(counter[h]))
            {
                error = $"entry {h}: counter {counter[h]} is {(counter[h] == 0 ? "zero" : counter[h] == ulong.MaxValue ? "at its largest value" : "shared with another list in flight")}";
                return false;
            }
            var copy = new PackedDescriptor[n];
            int cur = h;
            for (var k = 0; k < n; k++)
            {
                if (cur >= DescNum || claimed[cur])
                {
                    error = $"entry {h}: its list reaches entry {cur}, which is {(cur >= DescNum ? "past the entries" : "free or part of another list")}";
                    return false;
                }
                claimed[cur] = true;
                copy[k] = desc[cur];
                // 2.8.6: NEXT on every descriptor of a list but the last.
                if (((copy[k].Flags & PackedRing.DescFNext) != 0) != (k < n - 1))
                {
                    error = $"entry {h}: descriptor {k} of {n} has flags 0x{copy[k].Flags:x4}, {(k < n - 1 ? "without" : "with")} VIRTQ_DESC_F_NEXT";
                    return false;
                }
                if (k < n - 1)
                    cur = next[cur];
            }
            if (cur != last[h])
            {
                error = $"entry {h}: its list ends at entry {cur}, its last field says {last[h]}";
                return false;
            }
            var id = copy[^1].Id; // 2.8.6: the buffer id is in the list's last descriptor
            if (!ids.Add(id))
            {
                error = $"entry {h}: buffer id {id} is shared with another list in flight";
                return false;
            }
            slots += n;
            maxCounter = Math.Max(maxCounter, counter[h]);
            pending.Add(new Pending((ushort)h, copy, counter[h]));
        }
        if (slots > ringSize)
        {
            error = $"the lists in flight hold {slots} slots, more than the ring's {ringSize}";
            return false;
        }
        for (var i = 0; i < DescNum; i++)
        {
            if (!claimed[i])
            {
                error = $"entry {i} is neither free nor part of a list in flight";
                return false;
            }
        }
        pending.Sort((a, b) => a.Counter.CompareTo(b.Counter));

        // The record is sound: settle it in the document's order, then keep private copies.
        if (settled == Settlement.Committed)
        {
            Volatile.Write(ref H16(OldFreeHeadOffset), oldFreeHead);
            Volatile.Write(ref H16(OldUsedIdxOffset), oldUsedIdx);
            Volatile.Write(ref *(_base + OldUsedWrapOffset), oldUsedWrap);
        }
        Volatile.Write(ref H16(FreeHeadOffset), oldFreeHead);
        Volatile.Write(ref H16(UsedIdxOffset), oldUsedIdx);
        Volatile.Write(ref *(_base + UsedWrapOffset), oldUsedWrap);
        for (var i = 0; i < DescNum; i++)
        {
            if (free[i] && inflight[i] != 0)
                Volatile.Write(ref *(E(i) + EInflight), (byte)0);
        }
        next.CopyTo(_next, 0);
        last.CopyTo(_last, 0);
        num.CopyTo(_num, 0);
        _freeHead = oldFreeHead;
        _freeCount = freeCount;
        _usedIdx = oldUsedIdx;
        _usedWrap = oldUsedWrap == 1;

        // The available ring resumes past the slots of every list in flight (they were taken in ring order).
        var avail = oldUsedIdx + slots;
        var availWrap = _usedWrap;
        if (avail >= ringSize)
        {
            avail -= ringSize;
            availWrap = !availWrap;
        }
        plan = new Plan([.. pending], PackedRing.OffWrap(avail, availWrap), UsedState, maxCounter + 1, Fresh: false, settled);
        return true;
    }

    /// <summary>A new region: every entry free, in order; the used position the front-end gave; version last.</summary>
    private void InitialiseFresh(ushort usedState)
    {
        new Span<byte>(_base, HeaderSize + EntrySize * DescNum).Clear();
        H16(DescNumOffset) = DescNum;
        for (var i = 0; i < DescNum; i++)
        {
            _next[i] = (ushort)(i + 1); // the last points at DescNum: the end of the list
            F16(E(i), ENext) = _next[i];
        }
        _freeHead = 0;
        _freeCount = DescNum;
        _usedIdx = (ushort)(usedState & 0x7fff);
        _usedWrap = (usedState & 0x8000) != 0;
        H16(UsedIdxOffset) = H16(OldUsedIdxOffset) = _usedIdx;
        *(_base + UsedWrapOffset) = *(_base + OldUsedWrapOffset) = _usedWrap ? (byte)1 : (byte)0;
        Volatile.Write(ref H16(VersionOffset), Version);
    }

    // For tests and diagnostics.
    public bool IsInFlight(ushort entry) => entry < DescNum && Volatile.Read(ref *(E(entry) + EInflight)) == 1;
    public ushort RecordVersion => Volatile.Read(ref H16(VersionOffset));
}
