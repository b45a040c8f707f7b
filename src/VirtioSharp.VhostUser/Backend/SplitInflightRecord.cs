using System.Runtime.CompilerServices;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// One split queue's region of the inflight area (vhost-user.rst, "Inflight I/O tracking"):
/// <code>
/// QueueRegionSplit { u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx; DescStateSplit desc[desc_num]; }
/// DescStateSplit   { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
/// </code>
/// The writes of <see cref="Take"/> and <see cref="BeginUsed"/>/<see cref="EndUsed"/> happen in
/// the order the document gives, so a process killed between any two of them leaves a record
/// <see cref="TryReconcile"/> can repair. Only program order matters: the next reader is a later
/// process, after this one is gone, so volatile stores (which the JIT keeps in order) suffice.
/// </summary>
internal readonly unsafe struct SplitInflightRecord
{
    public const int HeaderSize = 16;
    public const int EntrySize = 16;
    public const ushort Version = 1;

    private const int VersionOffset = 8, DescNumOffset = 10, LastBatchHeadOffset = 12, UsedIdxOffset = 14;
    private const int EntryNextOffset = 6, EntryCounterOffset = 8;

    private readonly byte* _base;

    public SplitInflightRecord(nint address, ushort descNum)
    {
        _base = (byte*)address;
        DescNum = descNum;
    }

    /// <summary>Entries in this region (the queue size of the inflight description).</summary>
    public ushort DescNum { get; }

    private ref ushort Field16(int offset) => ref *(ushort*)(_base + offset);
    private byte* Entry(int head) => _base + HeaderSize + EntrySize * head;

    /// <summary>
    /// The driver's head <paramref name="head"/> was taken from the available ring: counter, then
    /// the inflight flag (a crash before the flag leaves the entry not in flight, and the head
    /// is read again from the available ring, which still holds it).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Take(ushort head, ulong counter)
    {
        var e = Entry(head);
        Volatile.Write(ref *(ulong*)(e + EntryCounterOffset), counter);
        Volatile.Write(ref *e, (byte)1);
    }

    /// <summary>Before the used element of <paramref name="head"/> is published: desc[i].next = last_batch_head; last_batch_head = i.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void BeginUsed(ushort head)
    {
        ref var lastBatchHead = ref Field16(LastBatchHeadOffset);
        Volatile.Write(ref *(ushort*)(Entry(head) + EntryNextOffset), lastBatchHead);
        Volatile.Write(ref lastBatchHead, head);
    }

    /// <summary>After used idx moved to <paramref name="usedIdx"/>: the flag goes, then used_idx follows the ring.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EndUsed(ushort head, ushort usedIdx)
    {
        Volatile.Write(ref *Entry(head), (byte)0);
        Volatile.Write(ref Field16(UsedIdxOffset), usedIdx);
    }

    /// <summary>What a ring starts from: the heads to do again, oldest first, and where the available ring resumes.</summary>
    public readonly record struct Plan(ushort[] Resubmit, ushort LastAvail, ulong NextCounter, bool Fresh, int BatchRepaired);

    /// <summary>
    /// Readies the record for a ring of <paramref name="ringSize"/> whose used idx in guest memory
    /// is <paramref name="ringUsedIdx"/>. A fresh region (version 0) is initialised. Otherwise the
    /// record is read once into a copy and checked; only then is it repaired: when used_idx lags
    /// the ring's, the last batch (the list from last_batch_head, that many entries) was published
    /// and its flags are cleared. The rest in flight are taken and not used: the ring resumes at
    /// used idx + their number, and they are done again in the order of their counters.
    /// Returns false, having written nothing, when the record cannot be trusted.
    /// </summary>
    public bool TryReconcile(ushort ringUsedIdx, ushort ringSize, out Plan plan, out string error)
    {
        plan = default;
        error = "";
        if (ringSize > DescNum)
        {
            error = $"the ring has {ringSize} entries, the record {DescNum}";
            return false;
        }
        var version = Volatile.Read(ref Field16(VersionOffset));
        if (version == 0)
        {
            new Span<byte>(_base, HeaderSize + EntrySize * DescNum).Clear();
            Field16(DescNumOffset) = DescNum;
            Field16(UsedIdxOffset) = ringUsedIdx;
            Volatile.Write(ref Field16(VersionOffset), Version);
            plan = new Plan([], ringUsedIdx, 1, Fresh: true, 0);
            return true;
        }
        if (version != Version)
        {
            error = $"version {version}, not {Version} (another layout)";
            return false;
        }
        var descNum = Field16(DescNumOffset);
        if (descNum != DescNum)
        {
            error = $"desc_num {descNum} differs from the queue size {DescNum} of the inflight description";
            return false;
        }
        var lastBatchHead = Field16(LastBatchHeadOffset);
        var usedIdx = Field16(UsedIdxOffset);

        // One read of every entry, into a copy that the checks and the repair work from.
        var flags = new byte[DescNum];
        var next = new ushort[DescNum];
        var counters = new ulong[DescNum];
        for (var i = 0; i < DescNum; i++)
        {
            var e = Entry(i);
            flags[i] = Volatile.Read(ref *e);
            next[i] = *(ushort*)(e + EntryNextOffset);
            counters[i] = *(ulong*)(e + EntryCounterOffset);
            if (flags[i] > 1)
            {
                error = $"entry {i}: inflight flag {flags[i]} is neither 0 nor 1";
                return false;
            }
            if (flags[i] == 1 && i >= ringSize)
            {
                error = $"entry {i} is in flight but the ring has only {ringSize} heads";
                return false;
            }
        }

        // The last batch: used idx moved past used_idx, and those entries' flags may still be set.
        var batch = (ushort)(ringUsedIdx - usedIdx);
        if (batch > ringSize)
        {
            error = $"the ring's used idx {ringUsedIdx} is {batch} past the record's used_idx {usedIdx}, more than the ring holds";
            return false;
        }
        var cleared = new List<ushort>(batch);
        var head = lastBatchHead;
        for (var n = 0; n < batch; n++)
        {
            if (head >= ringSize)
            {
                error = $"the last batch list reaches head {head}, outside the ring of {ringSize}";
                return false;
            }
            cleared.Add(head);
            head = next[head];
        }
        foreach (var h in cleared)
            flags[h] = 0;

        var pending = new List<ushort>();
        var seen = new HashSet<ulong>();
        ulong maxCounter = 0;
        for (var i = 0; i < ringSize; i++)
        {
            if (flags[i] == 0)
                continue;
            if (counters[i] == 0 || !seen.Add(counters[i]))
            {
                error = $"entry {i}: counter {counters[i]} is {(counters[i] == 0 ? "zero" : "shared with another entry in flight")}";
                return false;
            }
            maxCounter = Math.Max(maxCounter, counters[i]);
            pending.Add((ushort)i);
        }
        if (maxCounter == ulong.MaxValue)
        {
            error = "a counter is at its largest value";
            return false;
        }
        pending.Sort((a, b) => counters[a].CompareTo(counters[b]));

        // The record is sound: repair it as the document says (flags of the last batch, then used_idx).
        foreach (var h in cleared)
            Volatile.Write(ref *Entry(h), (byte)0);
        Volatile.Write(ref Field16(UsedIdxOffset), ringUsedIdx);
        plan = new Plan([.. pending], (ushort)(ringUsedIdx + pending.Count), maxCounter + 1, Fresh: false, cleared.Count);
        return true;
    }

    /// <summary>Heads whose inflight flag is set (for tests and diagnostics).</summary>
    public bool IsInFlight(ushort head) => head < DescNum && Volatile.Read(ref *Entry(head)) == 1;
    public ulong Counter(ushort head) => *(ulong*)(Entry(head) + EntryCounterOffset);
    public ushort UsedIdx => Volatile.Read(ref Field16(UsedIdxOffset));
    public ushort LastBatchHead => Volatile.Read(ref Field16(LastBatchHeadOffset));
    public ushort RecordVersion => Volatile.Read(ref Field16(VersionOffset));
}
