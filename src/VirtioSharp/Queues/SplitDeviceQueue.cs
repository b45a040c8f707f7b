using System.Runtime.CompilerServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// The device's half of a split virtqueue (2.7). Everything it reads from the rings is
/// guest-controlled: each value is read once into a local, checked, then used. A chain walk
/// is bounded by the queue size, so loops end. Not thread-safe: one worker owns it.
/// </summary>
public sealed unsafe class SplitDeviceQueue : IDeviceQueue
{
    private readonly byte* _desc;
    private readonly byte* _avail;
    private readonly byte* _used;
    private readonly ChainBuffer[] _scratch;
    private readonly bool[] _inFlight;
    private readonly bool _indirect;
    private ushort _lastAvail;
    private ushort _availSeen;             // the driver's avail idx as last read (checked); entries up to it are known
    private ushort _usedShadow;
    private ushort _usedPublished;
    private bool _usedIdxBehind;           // AddUsedToBatch wrote elements that used idx in the ring does not count yet
    private bool _signalNext; // signal the next used batch whatever used_event says
    private int _inFlightCount;
    private readonly GuestMemory _memory;
    private SplitQueueRecorder? _recorder; // null unless someone records: the hot path pays a null check
    // Ends the object on a cache line of its own, so the fields above (written by the device's
    // thread) never share a line with an object the driver's thread writes.
#pragma warning disable CS0169 // never read: it only takes room
    private CacheLinePad _pad;
#pragma warning restore CS0169

    private SplitDeviceQueue(int index, ushort size, GuestMemory memory, nint desc, nint avail, nint used, bool eventIdx, bool indirect, ushort startIndex, ushort usedStartIndex)
    {
        Index = index;
        Size = size;
        _memory = memory;
        _desc = (byte*)desc;
        _avail = (byte*)avail;
        _used = (byte*)used;
        EventIdx = eventIdx;
        _indirect = indirect;
        _scratch = new ChainBuffer[size];
        _inFlight = PaddedArray.Of<bool>(size);
        _lastAvail = startIndex;
        _availSeen = startIndex;
        _usedShadow = usedStartIndex;
        _usedPublished = usedStartIndex;
    }

    /// <summary>
    /// Builds the queue over rings at guest-physical addresses. Returns null (with a reason)
    /// when a ring is misaligned or not wholly inside one region of guest memory.
    /// <paramref name="usedStartIndex"/> defaults to <paramref name="startIndex"/>, or with
    /// <paramref name="usedFromRing"/> to the used index found in the ring, read only once the ring
    /// passed every check (vhost-user resumes a ring so: vhost-user.rst, SET_VRING_BASE).
    /// </summary>
    public static SplitDeviceQueue? Create(int index, int size, GuestMemory memory, ulong descAddr, ulong availAddr, ulong usedAddr,
        bool eventIdx, bool indirect, out string? error, ushort startIndex = 0, bool addressesAreUser = false, ushort? usedStartIndex = null,
        bool usedFromRing = false)
    {
        error = null;
        if (!SplitRing.IsValidSize(size))
        {
            error = $"queue size {size} is not a power of two in 1..32768 (2.7)";
            return null;
        }
        if (descAddr % SplitQueueLayout.DescriptorTableAlignment != 0 || availAddr % SplitQueueLayout.AvailRingAlignment != 0 || usedAddr % SplitQueueLayout.UsedRingAlignment != 0)
        {
            error = $"ring addresses desc=0x{descAddr:x} avail=0x{availAddr:x} used=0x{usedAddr:x} break the 16/2/4 alignment of 2.7";
            return null;
        }
        nint d, a, u;
        bool ok = addressesAreUser
            ? memory.TryTranslateUser(descAddr, SplitQueueLayout.DescriptorTableSize(size), out d)
              & memory.TryTranslateUser(availAddr, SplitQueueLayout.AvailRingSize(size), out a)
              & memory.TryTranslateUser(usedAddr, SplitQueueLayout.UsedRingSize(size), out u)
            : memory.TryTranslate(descAddr, SplitQueueLayout.DescriptorTableSize(size), out d)
              & memory.TryTranslate(availAddr, SplitQueueLayout.AvailRingSize(size), out a)
              & memory.TryTranslate(usedAddr, SplitQueueLayout.UsedRingSize(size), out u);
        if (!ok)
        {
            error = $"ring desc=0x{descAddr:x} avail=0x{availAddr:x} used=0x{usedAddr:x} (size {size}) is not inside guest memory";
            return null;
        }
        // 2.7.8: idx sits after flags; aligned and inside guest memory, as checked above.
        var usedStart = usedStartIndex ?? (usedFromRing ? Volatile.Read(ref *(ushort*)(u + 2)) : startIndex);
        return new SplitDeviceQueue(index, (ushort)size, memory, d, a, u, eventIdx, indirect, startIndex, usedStart);
    }

    public int Index { get; }
    public ushort Size { get; }
    public bool EventIdx { get; }
    public ushort LastAvailIndex => _lastAvail;
    /// <summary>The used index the device publishes next (2.7.8).</summary>
    public ushort UsedIndex => _usedShadow;
    public int InFlight => _inFlightCount;
    public RingError LastRingError { get; private set; }
    public int LastRingErrorValue { get; private set; }

    /// <summary>
    /// Makes the next <see cref="PublishUsed"/> report that the driver wants an interrupt,
    /// whatever used_event or the flags say. For a ring resumed from indices another device
    /// process left: it may have carried used idx past used_event and died before notifying,
    /// and then no later batch would ever cross used_event by the 2.7.7.2 formula.
    /// </summary>
    public void SignalNextBatch() => _signalNext = true;

    /// <summary>Reports what this half does as ring events while <paramref name="sink"/> is active; null stops it.</summary>
    public void Record(ITraceSink? sink, ulong descAddr, ulong availAddr, ulong usedAddr, bool indirect) =>
        _recorder = sink is null ? null : new SplitQueueRecorder(sink, _memory, Index, Size, descAddr, availAddr, usedAddr, EventIdx, indirect);

    /// <summary>Heads taken and not yet returned, for in-flight tracking.</summary>
    public bool IsInFlight(ushort head) => head < Size && _inFlight[head];

    // --- ring field access (2.7.6 / 2.7.8); ring indices use acquire/release ordering ---
    private ushort AvailFlags => Volatile.Read(ref *(ushort*)_avail);
    private ushort AvailIdx => Volatile.Read(ref *(ushort*)(_avail + 2));
    private ushort AvailRing(int slot) => Volatile.Read(ref *(ushort*)(_avail + 4 + 2 * slot));
    private ushort UsedEvent => Volatile.Read(ref *(ushort*)(_avail + 4 + 2 * Size));
    private ref ushort UsedFlags => ref *(ushort*)_used;
    private ref ushort UsedIdx => ref *(ushort*)(_used + 2);
    private ref ushort AvailEvent => ref *(ushort*)(_used + 4 + 8 * Size);

    public PopResult TryPop(out DescriptorChain chain)
    {
        chain = default;
        if (_lastAvail == _availSeen)
        {
            // The driver's avail idx is read only when every entry known from the last read is
            // taken: the line it sits on moves between the cores each time the driver publishes.
            var availIdx = AvailIdx; // acquire: ring entries below it are visible (2.7.13.3)
            var pending = (ushort)(availIdx - _lastAvail);
            if (pending == 0)
                return PopResult.Empty;
            if (pending > Size)
                return Corrupt(RingError.AvailIndexTooFarAhead, availIdx);
            _availSeen = availIdx;
        }

        var head = AvailRing(_lastAvail & (Size - 1));
        if (head >= Size)
            return Corrupt(RingError.HeadOutOfRange, head);
        if (_inFlight[head])
            return Corrupt(RingError.HeadInFlight, head);
        _recorder?.Popped(_availSeen, _lastAvail & (Size - 1), head);
        _lastAvail++;
        _inFlight[head] = true;
        _inFlightCount++;

        var count = Walk(head, out var error, out var errorDescriptor);
        _recorder?.Walked();
        chain = new DescriptorChain(head, _scratch.AsSpan(0, count), error, errorDescriptor);
        return PopResult.Chain;
    }

    /// <summary>
    /// Takes the chain at <paramref name="head"/> without reading the available ring: a request a
    /// previous device process took and never returned (vhost-user's inflight resubmission).
    /// </summary>
    public PopResult TryTakeHead(ushort head, out DescriptorChain chain)
    {
        chain = default;
        if (head >= Size)
            return Corrupt(RingError.HeadOutOfRange, head);
        if (_inFlight[head])
            return Corrupt(RingError.HeadInFlight, head);
        _inFlight[head] = true;
        _inFlightCount++;
        var count = Walk(head, out var error, out var errorDescriptor);
        chain = new DescriptorChain(head, _scratch.AsSpan(0, count), error, errorDescriptor);
        return PopResult.Chain;
    }

    private PopResult Corrupt(RingError error, int value)
    {
        LastRingError = error;
        LastRingErrorValue = value;
        return PopResult.RingCorrupt;
    }

    /// <summary>
    /// Walks the chain from <paramref name="head"/> into the scratch array (2.7.5, 2.7.5.3).
    /// The total number of descriptors visited, direct and indirect, is bounded by the queue size.
    /// </summary>
    private int Walk(ushort head, out ChainError error, out int errorDescriptor)
    {
        error = ChainError.None;
        errorDescriptor = -1;
        var table = _desc;
        uint tableSize = Size;
        bool inIndirect = false;
        ulong tableAddr = 0; // guest address of the indirect table being walked, for recordings
        uint index = head;
        int count = 0;
        int visited = 0;
        bool seenWritable = false;

        while (true)
        {
            if (++visited > Size)
            {
                error = ChainError.ChainTooLong;
                errorDescriptor = (int)index;
                return count;
            }
            var d = table + index * SplitRing.DescriptorSize;
            var addr = Unsafe.ReadUnaligned<ulong>(d);
            var len = Unsafe.ReadUnaligned<uint>(d + 8);
            var flags = Unsafe.ReadUnaligned<ushort>(d + 12);
            var next = Unsafe.ReadUnaligned<ushort>(d + 14);
            _recorder?.DescriptorRead(index, addr, len, flags, next, tableAddr);

            if ((flags & SplitRing.DescFIndirect) != 0)
            {
                errorDescriptor = (int)index;
                if (inIndirect) { error = ChainError.NestedIndirect; return count; }
                if (!_indirect) { error = ChainError.IndirectNotNegotiated; return count; }
                if ((flags & SplitRing.DescFNext) != 0) { error = ChainError.IndirectWithNext; return count; }
                if (len == 0 || len % SplitRing.DescriptorSize != 0) { error = ChainError.IndirectBadLength; return count; }
                var entries = len / SplitRing.DescriptorSize;
                if (entries > Size) { error = ChainError.ChainTooLong; return count; }
                if (!_memory.TryTranslate(addr, len, out var t)) { error = ChainError.IndirectOutOfMemory; return count; }
                errorDescriptor = -1;
                // The descriptor that refers to the table carries no buffer: the chain is the
                // table's entries (plus any direct ones before it), up to the queue size.
                visited--;
                table = (byte*)t;
                tableSize = entries;
                inIndirect = true;
                tableAddr = addr;
                index = 0;
                continue;
            }

            var writable = (flags & SplitRing.DescFWrite) != 0;
            if (writable)
                seenWritable = true;
            else if (seenWritable && error == ChainError.None)
            {
                error = ChainError.ReadableAfterWritable;
                errorDescriptor = (int)index;
            }

            if (!_scratch[count++].Set(_memory, addr, len, writable) && error == ChainError.None)
            {
                error = ChainError.BufferOutOfMemory;
                errorDescriptor = (int)index;
            }

            if ((flags & SplitRing.DescFNext) == 0)
                return count;
            if (count == Size)
            {
                error = ChainError.ChainTooLong;
                errorDescriptor = (int)index;
                return count;
            }
            if (next >= tableSize)
            {
                error = ChainError.NextOutOfRange;
                errorDescriptor = (int)index;
                return count;
            }
            index = next;
        }
    }

    public void AddUsed(ushort head, uint written)
    {
        WriteUsedElement(head, written);
        // Recorded before the store below hands the element to the driver: it may take it, and reuse
        // the head for its next request, before a later record would run (the recording would then
        // give this write to that request).
        _recorder?.Used(head, written, (ushort)(_usedShadow - 1), _usedShadow);
        // 2.7.8.2: the element must be visible before idx moves (release store).
        Volatile.Write(ref UsedIdx, _usedShadow);
        _usedIdxBehind = false;
    }

    /// <summary>
    /// Writes the used element and leaves used idx to the end of the batch (<see cref="PublishUsed"/>,
    /// <see cref="PublishUsedForPoller"/>): the line used idx sits on, which a polling driver reads,
    /// then moves between the cores once per batch instead of once per element. While a recorder
    /// is attached each element moves idx at once, so a recording shows it as before.
    /// </summary>
    public void AddUsedToBatch(ushort head, uint written)
    {
        if (_recorder is not null)
        {
            AddUsed(head, written);
            return;
        }
        WriteUsedElement(head, written);
        _usedIdxBehind = true;
    }

    /// <summary>Ends <paramref name="head"/>'s flight and writes its used element at the shadow index, which moves on; used idx does not.</summary>
    private void WriteUsedElement(ushort head, uint written)
    {
        if (head < Size && _inFlight[head])
        {
            _inFlight[head] = false;
            _inFlightCount--;
        }
        // 2.7.8: struct virtq_used_elem { le32 id; le32 len; }, written as one 8-byte store.
        Unsafe.WriteUnaligned(_used + 4 + 8 * (_usedShadow & (Size - 1)), (ulong)head | ((ulong)written << 32));
        _usedShadow++;
    }

    /// <summary>2.7.8.2: moves used idx over the elements <see cref="AddUsedToBatch"/> wrote (release store: they are visible first).</summary>
    private void WriteUsedIdx()
    {
        if (!_usedIdxBehind)
            return;
        _usedIdxBehind = false;
        Volatile.Write(ref UsedIdx, _usedShadow);
    }

    public bool PublishUsed()
    {
        var oldIdx = _usedPublished;
        var newIdx = _usedShadow;
        if (oldIdx == newIdx)
            return false;
        _usedPublished = newIdx;
        WriteUsedIdx();
        // Full fence: publish idx, then read the driver's used_event / flags (2.7.7.2).
        Interlocked.MemoryBarrier();
        if (_signalNext)
        {
            _signalNext = false;
            _recorder?.InterruptDecision(EventIdx, UsedEvent, AvailFlags, oldIdx, newIdx, true);
            return true;
        }
        if (_recorder is { } r)
            return Recorded(r, oldIdx, newIdx);
        if (EventIdx)
            return SplitRing.NeedEvent(UsedEvent, newIdx, oldIdx);
        return (AvailFlags & SplitRing.AvailFNoInterrupt) == 0;
    }

    /// <summary>
    /// Ends a batch for a caller that will not interrupt whatever the driver asks (it knows the
    /// driver polls). 2.7.7.2 asks for the full barrier only before reading the driver's flags or
    /// used_event; nothing is read here, so the release store of used idx is all it takes.
    /// </summary>
    public void PublishUsedForPoller()
    {
        if (_recorder is not null)
        {
            PublishUsed(); // a recording shows the decision the driver's state would give
            return;
        }
        WriteUsedIdx();
        _usedPublished = _usedShadow;
    }

    /// <summary>PublishUsed's decision, read once and reported with the value it rests on.</summary>
    private bool Recorded(SplitQueueRecorder r, ushort oldIdx, ushort newIdx)
    {
        var usedEvent = UsedEvent;
        var flags = AvailFlags;
        var needed = EventIdx ? SplitRing.NeedEvent(usedEvent, newIdx, oldIdx) : (flags & SplitRing.AvailFNoInterrupt) == 0;
        r.InterruptDecision(EventIdx, usedEvent, flags, oldIdx, newIdx, needed);
        return needed;
    }

    public void DisableNotifications()
    {
        if (EventIdx)
            // 2.7.10: the driver notifies when idx passes avail_event; one behind our position is
            // passed only after a full wrap of the index, which a queue of at most 32768 never sees.
            Volatile.Write(ref AvailEvent, (ushort)(_lastAvail - 1));
        else
        {
            var old = Volatile.Read(ref UsedFlags);
            _recorder?.UsedFlags(old, (ushort)(old | SplitRing.UsedFNoNotify)); // before the driver can act on it
            Volatile.Write(ref UsedFlags, (ushort)(old | SplitRing.UsedFNoNotify));
        }
    }

    public bool DriverAwaitsUsed(out uint position)
    {
        var usedEvent = UsedEvent;
        var usedIdx = Volatile.Read(ref UsedIdx);
        position = usedEvent | (uint)usedIdx << 16;
        // 2.7.10: the driver asked to hear once idx passes used_event; idx is past it by at most a
        // queue's worth when that element is written and the driver has not caught up.
        var behind = (ushort)(usedIdx - usedEvent);
        return EventIdx && behind != 0 && behind <= Size;
    }

    public string DescribeRing() =>
        $"split: avail idx {AvailIdx} (flags 0x{AvailFlags:x4}, used_event {UsedEvent}), next available {_lastAvail}; "
        + $"used idx {Volatile.Read(ref UsedIdx)} (flags 0x{Volatile.Read(ref UsedFlags):x4}, avail_event {Volatile.Read(ref AvailEvent)}), published {_usedPublished}; {_inFlightCount} in flight";

    /// <summary>Whether the driver has made a chain available that the device has not taken (a look, for polling).</summary>
    public bool HasAvailable => AvailIdx != _lastAvail;

    public bool Polled { get; set; }

    public bool EnableNotifications()
    {
        if (Polled)
            return HasAvailable; // notifications stay off: the worker looks at the ring before it sleeps
        if (EventIdx)
        {
            _recorder?.AvailEvent(_lastAvail); // before the driver can act on it
            Volatile.Write(ref AvailEvent, _lastAvail); // 2.7.10: notify me once idx passes this
        }
        else
        {
            var old = Volatile.Read(ref UsedFlags);
            _recorder?.UsedFlags(old, (ushort)(old & ~SplitRing.UsedFNoNotify));
            Volatile.Write(ref UsedFlags, (ushort)(old & ~SplitRing.UsedFNoNotify));
        }
        // Full fence: publish the request for notifications, then re-read avail idx,
        // or a buffer made available in between would be missed.
        Interlocked.MemoryBarrier();
        return AvailIdx != _lastAvail;
    }
}
