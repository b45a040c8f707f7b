using System.Runtime.CompilerServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// The device's half of a packed virtqueue (2.8). The driver's descriptors are read from the
/// ring in order (2.8.12); a used descriptor goes back in the slot after the last one used,
/// with the buffer id and the length written (2.8.6), and the device then skips the list's
/// other slots. Everything read from the ring is guest-controlled: read once, checked, then
/// used; a walk never visits more slots than the ring has free. Not thread-safe: one worker owns it.
/// </summary>
public sealed unsafe class PackedDeviceQueue : IDeviceQueue
{
    private readonly byte* _desc;
    private readonly byte* _driverEvent;   // 2.8.10: Driver Event Suppression, read-only for the device
    private readonly byte* _deviceEvent;   // 2.8.10: Device Event Suppression, written by the device
    private readonly GuestMemory _memory;
    private readonly bool _indirect;
    private readonly ChainBuffer[] _scratch;
    private PackedDescriptor[]? _captured; // the last list's descriptors as read, while someone keeps a record of them
    private int _capturedCount;
    // A chain in flight is known by a token below the queue size (the buffer id itself when
    // it is below the size and free): its buffer id and how many ring slots it took.
    private readonly ushort[] _tokenId;
    private readonly ushort[] _tokenSlots;  // 0 = token free
    private readonly ulong[] _idInFlight = PaddedArray.Of<ulong>(65536 / 64);
    private int _tokenCursor;
    private ushort _nextAvail;             // slot the next list starts at
    private bool _availWrap;               // 2.8.1: the Driver Ring Wrap Counter the device expects there
    private ushort _nextUsed;              // slot the next used descriptor goes to
    private bool _usedWrap;                // 2.8.1: Device Ring Wrap Counter
    private int _slotsInFlight;            // slots between the used and the available position
    private int _usedSinceEvent;           // slots used since the last PublishUsed
    private PackedBatchHead _batchHead;    // the batch's first used descriptor, its flags held until the batch ends
    private int _inFlightCount;
    private PackedQueueRecorder? _recorder; // null unless someone records: the hot path pays a null check
    // Ends the object on a cache line of its own, so the fields above (written by the device's
    // thread) never share a line with an object the driver's thread writes.
#pragma warning disable CS0169 // never read: it only takes room
    private CacheLinePad _pad;
#pragma warning restore CS0169

    private PackedDeviceQueue(int index, ushort size, GuestMemory memory, nint desc, nint driverEvent, nint deviceEvent, bool eventIdx, bool indirect,
        ushort availState, ushort usedState)
    {
        Index = index;
        Size = size;
        _memory = memory;
        _desc = (byte*)desc;
        _driverEvent = (byte*)driverEvent;
        _deviceEvent = (byte*)deviceEvent;
        EventIdx = eventIdx;
        _indirect = indirect;
        _scratch = new ChainBuffer[size];
        _tokenId = PaddedArray.Of<ushort>(size);
        _tokenSlots = PaddedArray.Of<ushort>(size);
        _nextAvail = (ushort)(availState & 0x7fff);
        _availWrap = (availState & 0x8000) != 0;
        _nextUsed = (ushort)(usedState & 0x7fff);
        _usedWrap = (usedState & 0x8000) != 0;
        // Linear positions (slot + size for the later lap) give the slots between used and avail.
        var avail = _nextAvail + (_availWrap == _usedWrap ? 0 : size);
        _slotsInFlight = Math.Clamp(avail - _nextUsed, 0, size);
    }

    /// <summary>
    /// Builds the queue over the three parts at guest-physical (or, for vhost-user, front-end
    /// virtual) addresses. Returns null with a reason when a part is misaligned (2.8.10.1), the
    /// size is out of range, a saved position lies past the ring, or a part is outside guest memory.
    /// <paramref name="availState"/> and <paramref name="usedState"/> hold a slot in bits 0-14 and a
    /// wrap counter in bit 15 (both start at slot 0 with the counter at 1, 2.8.1).
    /// </summary>
    public static PackedDeviceQueue? Create(int index, int size, GuestMemory memory, ulong descAddr, ulong driverAddr, ulong deviceAddr,
        bool eventIdx, bool indirect, out string? error, ushort availState = 0x8000, bool addressesAreUser = false, ushort? usedState = null)
    {
        error = null;
        if (!PackedRing.IsValidSize(size))
        {
            error = $"queue size {size} is not in 1..32768 (2.8)";
            return null;
        }
        if (descAddr % PackedQueueLayout.DescriptorRingAlignment != 0 || driverAddr % PackedQueueLayout.EventSuppressionAlignment != 0
            || deviceAddr % PackedQueueLayout.EventSuppressionAlignment != 0)
        {
            error = $"ring addresses desc=0x{descAddr:x} driver=0x{driverAddr:x} device=0x{deviceAddr:x} break the 16/4/4 alignment of 2.8.10.1";
            return null;
        }
        var used = usedState ?? availState;
        if ((availState & 0x7fff) >= size || (used & 0x7fff) >= size)
        {
            error = $"ring position avail 0x{availState:x4} / used 0x{used:x4} lies past a ring of {size} descriptors";
            return null;
        }
        nint d, dr, dv;
        bool ok = addressesAreUser
            ? memory.TryTranslateUser(descAddr, PackedQueueLayout.DescriptorRingSize(size), out d)
              & memory.TryTranslateUser(driverAddr, PackedRing.EventSuppressionSize, out dr)
              & memory.TryTranslateUser(deviceAddr, PackedRing.EventSuppressionSize, out dv)
            : memory.TryTranslate(descAddr, PackedQueueLayout.DescriptorRingSize(size), out d)
              & memory.TryTranslate(driverAddr, PackedRing.EventSuppressionSize, out dr)
              & memory.TryTranslate(deviceAddr, PackedRing.EventSuppressionSize, out dv);
        if (!ok)
        {
            error = $"ring desc=0x{descAddr:x} driver=0x{driverAddr:x} device=0x{deviceAddr:x} (size {size}) is not inside guest memory";
            return null;
        }
        return new PackedDeviceQueue(index, (ushort)size, memory, d, dr, dv, eventIdx, indirect, availState, used);
    }

    public int Index { get; }
    public ushort Size { get; }
    public VirtqueueFormat Format => VirtqueueFormat.Packed;
    public bool EventIdx { get; }
    /// <summary>Slot of the next list in bits 0-14, the Driver Ring Wrap Counter expected there in bit 15.</summary>
    public ushort LastAvailIndex => PackedRing.OffWrap(_nextAvail, _availWrap);
    /// <summary>Slot of the next used descriptor in bits 0-14, the Device Ring Wrap Counter in bit 15.</summary>
    public ushort UsedIndex => PackedRing.OffWrap(_nextUsed, _usedWrap);
    public int InFlight => _inFlightCount;
    /// <summary>Ring slots taken by lists in flight.</summary>
    public int SlotsInFlight => _slotsInFlight;
    public RingError LastRingError { get; private set; }
    public int LastRingErrorValue { get; private set; }

    /// <summary>
    /// Reports the ring's steps as events to <paramref name="sink"/> (null: stop), announcing its geometry
    /// at the guest addresses <paramref name="descAddr"/>, <paramref name="driverAddr"/> and <paramref name="deviceAddr"/>.
    /// </summary>
    public void Record(ITraceSink? sink, ulong descAddr, ulong driverAddr, ulong deviceAddr, bool indirect) =>
        _recorder = sink is null ? null : new PackedQueueRecorder(sink, _memory, Index, Size, EventIdx, indirect,
            (nint)_desc, (nint)_driverEvent, (nint)_deviceEvent, descAddr, driverAddr, deviceAddr, announce: true);

    /// <summary>
    /// With strict mode on, driver requirements of 2.8 that do not break a request (the device
    /// ignores what the spec tells it to ignore) are still reported here.
    /// </summary>
    public BreachReporter? Breaches { get; set; }

    public bool IsInFlight(ushort token) => token < Size && _tokenSlots[token] != 0;

    /// <summary>
    /// Keeps a copy of each list's descriptors as <see cref="TryPop"/> reads them (one array made
    /// here, nothing per request), for a record that must outlive the ring's slots: a used
    /// descriptor may be written over the slots of a list still in flight (2.8.6).
    /// </summary>
    public void CaptureLists() => _captured ??= new PackedDescriptor[Size];

    /// <summary>The descriptors of the list the last successful <see cref="TryPop"/> took (after <see cref="CaptureLists"/>).</summary>
    public ReadOnlySpan<PackedDescriptor> LastList => _captured.AsSpan(0, _capturedCount);

    /// <summary>The buffer id (2.8.6) of a chain in flight.</summary>
    public ushort BufferId(ushort token) => token < Size ? _tokenId[token] : (ushort)0;

    private byte* Slot(int slot) => _desc + slot * PackedRing.DescriptorSize;
    // 2.8.21.1: flags are read first, with acquire, so the rest of the descriptor (written
    // before the driver's release of flags) is seen as the driver wrote it.
    private static ushort ReadFlags(byte* d) => Volatile.Read(ref *(ushort*)(d + 14));

    /// <summary>Whether the driver has made a descriptor available at the device's position (a look with acquire, for polling; 2.8.1).</summary>
    public bool HasAvailable => PackedRing.IsAvail(ReadFlags(Slot(_nextAvail)), _availWrap);

    public PopResult TryPop(out DescriptorChain chain)
    {
        var first = Slot(_nextAvail);
        var flags = ReadFlags(first);
        if (!PackedRing.IsAvail(flags, _availWrap))
        {
            chain = default;
            // 2.8.1: the slot still holds the lap before (a used descriptor, a skipped slot or
            // zeroes). AVAIL and USED both equal to this lap's counter were never written by
            // the device here: the driver's flags went backwards.
            return PackedRing.IsUsed(flags, _availWrap) ? Corrupt(RingError.PackedFlagsInconsistent, flags) : PopResult.Empty;
        }
        if (_slotsInFlight >= Size)
        {
            chain = default;
            return Corrupt(RingError.PackedRingOverrun, _nextAvail); // 2.8.16: every slot is still the device's
        }
        // The common list, one direct descriptor, here; a longer or indirect one, or one someone
        // records, in its own method, so this one's frame stays small.
        if ((flags & (PackedRing.DescFNext | PackedRing.DescFIndirect)) == 0 && _captured is null && _recorder is null)
            return PopOne(first, flags, out chain);
        return PopList(flags, out chain);
    }

    /// <summary><see cref="TryPop"/> for any list: the walk over its slots, bounded by the free ones.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private PopResult PopList(ushort flags, out DescriptorChain chain)
    {
        chain = default;
        var free = Size - _slotsInFlight;
        var error = ChainError.None;
        var errorDescriptor = -1;
        var count = 0;
        var slots = 0;
        int slot = _nextAvail;
        var wrap = _availWrap;
        var seenWritable = false;
        ushort id;
        while (true)
        {
            var d = Slot(slot);
            if (slots > 0)
            {
                // 2.8.6: every descriptor of a list carries the list's AVAIL/USED bits.
                flags = Unsafe.ReadUnaligned<ushort>(d + 14);
                if (!PackedRing.IsAvail(flags, wrap))
                    return Corrupt(RingError.PackedDescriptorNotAvailable, slot);
            }
            var addr = Unsafe.ReadUnaligned<ulong>(d);
            var len = Unsafe.ReadUnaligned<uint>(d + 8);
            id = Unsafe.ReadUnaligned<ushort>(d + 12);
            if (_captured != null)
                _captured[slots] = new PackedDescriptor(addr, len, id, flags);
            slots++;
            _recorder?.DescriptorRead(slots - 1, slot, addr, len, id, flags);

            if ((flags & PackedRing.DescFIndirect) != 0)
            {
                if (error == ChainError.None)
                    error = IndirectError(flags, slots, len, out errorDescriptor, slot);
                if (error == ChainError.None)
                    count = ExpandIndirect(addr, len, ref error, ref errorDescriptor);
            }
            else if (count < Size)
                AddBuffer(ref count, addr, len, (flags & PackedRing.DescFWrite) != 0, ref seenWritable, ref error, ref errorDescriptor, slot);

            if (++slot == Size)
            {
                slot = 0;
                wrap = !wrap;
            }
            if ((flags & PackedRing.DescFNext) == 0)
                break; // 2.8.6: the buffer id is in the last descriptor of the list
            if (slots == free)
                return Corrupt(free == Size ? RingError.PackedChainTooLong : RingError.PackedRingOverrun, _nextAvail);
        }

        if ((_idInFlight[id >> 6] & (1UL << (id & 63))) != 0)
            return Corrupt(RingError.PackedBufferIdInFlight, id);
        var token = TakeToken(id);
        _idInFlight[id >> 6] |= 1UL << (id & 63);
        _tokenId[token] = id;
        _tokenSlots[token] = (ushort)slots;
        _slotsInFlight += slots;
        _inFlightCount++;
        _recorder?.Popped(_nextAvail, slots, id, _availWrap, wrap, _scratch.AsSpan(0, count));
        _nextAvail = (ushort)slot;
        _availWrap = wrap;
        _capturedCount = slots;
        chain = new DescriptorChain(token, _scratch.AsSpan(0, count), error, errorDescriptor, VirtqueueFormat.Packed);
        return PopResult.Chain;
    }

    /// <summary>
    /// <see cref="TryPop"/> for a list of one direct descriptor (neither NEXT nor INDIRECT in the
    /// <paramref name="flags"/> already read and found available), while nobody records or
    /// captures: the same reads, each once, and the same checks as the walk, without its loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PopResult PopOne(byte* d, ushort flags, out DescriptorChain chain)
    {
        var addr = Unsafe.ReadUnaligned<ulong>(d);
        var len = Unsafe.ReadUnaligned<uint>(d + 8);
        var id = Unsafe.ReadUnaligned<ushort>(d + 12);
        var at = _nextAvail;
        // 2.8.4: the buffer inside guest memory, or the chain carries the error.
        var error = _scratch[0].Set(_memory, addr, len, (flags & PackedRing.DescFWrite) != 0) ? ChainError.None : ChainError.BufferOutOfMemory;
        ref var inFlight = ref _idInFlight[id >> 6];
        var bit = 1UL << (id & 63);
        if ((inFlight & bit) != 0)
        {
            chain = default;
            return Corrupt(RingError.PackedBufferIdInFlight, id);
        }
        var token = TakeToken(id);
        inFlight |= bit;
        _tokenId[token] = id;
        _tokenSlots[token] = 1;
        _slotsInFlight++;
        _inFlightCount++;
        if (at + 1 == Size)
        {
            _nextAvail = 0;
            _availWrap = !_availWrap;
        }
        else
            _nextAvail = (ushort)(at + 1);
        _capturedCount = 1;
        chain = new DescriptorChain(token, new ReadOnlySpan<ChainBuffer>(_scratch, 0, 1), error, error == ChainError.None ? -1 : at, VirtqueueFormat.Packed);
        return PopResult.Chain;
    }

    /// <summary>
    /// Takes again a list a previous device process took and did not return, from a copy of its
    /// descriptors (its ring slots may hold used descriptors by now). The queue was created with
    /// its available position past every such list, so their slots already count as in flight;
    /// the buffer id is the last descriptor's (2.8.6). The copy is checked as a list from the
    /// ring would be: buffers inside guest memory, indirect tables as 2.8.7 and 2.8.19 allow.
    /// </summary>
    public PopResult TryTakeRecorded(ReadOnlySpan<PackedDescriptor> list, out DescriptorChain chain)
    {
        chain = default;
        if (list.Length == 0 || list.Length > _slotsInFlight)
            return Corrupt(RingError.PackedRingOverrun, list.Length);
        var error = ChainError.None;
        var errorDescriptor = -1;
        var count = 0;
        var seenWritable = false;
        for (var i = 0; i < list.Length; i++)
        {
            var d = list[i];
            if ((d.Flags & PackedRing.DescFIndirect) != 0)
            {
                if (error == ChainError.None)
                    error = IndirectError(d.Flags, i + 1, d.Length, out errorDescriptor, i);
                if (error == ChainError.None)
                    count = ExpandIndirect(d.Address, d.Length, ref error, ref errorDescriptor);
            }
            else if (count < Size)
                AddBuffer(ref count, d.Address, d.Length, (d.Flags & PackedRing.DescFWrite) != 0, ref seenWritable, ref error, ref errorDescriptor, i);
        }
        var id = list[^1].Id;
        if ((_idInFlight[id >> 6] & (1UL << (id & 63))) != 0)
            return Corrupt(RingError.PackedBufferIdInFlight, id);
        var token = TakeToken(id);
        _idInFlight[id >> 6] |= 1UL << (id & 63);
        _tokenId[token] = id;
        _tokenSlots[token] = (ushort)list.Length;
        _inFlightCount++;
        chain = new DescriptorChain(token, _scratch.AsSpan(0, count), error, errorDescriptor, VirtqueueFormat.Packed);
        return PopResult.Chain;
    }

    /// <summary>2.8.7 / 2.8.19: checks a descriptor with VIRTQ_DESC_F_INDIRECT before its table is read.</summary>
    private ChainError IndirectError(ushort flags, int slots, uint len, out int errorDescriptor, int slot)
    {
        errorDescriptor = slot;
        if (!_indirect)
            return ChainError.IndirectNotNegotiated;
        // 2.8.19: no INDIRECT inside a list linked by NEXT (with NEXT, or after direct ones).
        if ((flags & PackedRing.DescFNext) != 0 || slots > 1)
            return ChainError.IndirectWithNext;
        if (len == 0 || len % PackedRing.DescriptorSize != 0)
            return ChainError.IndirectBadLength;
        if (len / PackedRing.DescriptorSize > Size)
            return ChainError.ChainTooLong; // 2.8.5: no limit given, so at most the queue size
        errorDescriptor = -1;
        return ChainError.None;
    }

    /// <summary>
    /// 2.8.7: an indirect table is len/16 struct pvirtq_desc one after another; only WRITE counts
    /// in its flags, and its ids are ignored.
    /// </summary>
    private int ExpandIndirect(ulong addr, uint len, ref ChainError error, ref int errorDescriptor)
    {
        if (!_memory.TryTranslate(addr, len, out var t))
        {
            error = ChainError.IndirectOutOfMemory;
            errorDescriptor = 0;
            return 0;
        }
        var table = (byte*)t;
        var entries = (int)(len / PackedRing.DescriptorSize);
        var count = 0;
        var seenWritable = false;
        for (var i = 0; i < entries; i++)
        {
            var e = table + i * PackedRing.DescriptorSize;
            var flags = Unsafe.ReadUnaligned<ushort>(e + 14);
            // 2.8.19: the driver sets no flag but WRITE in an indirect table (the device ignores the rest, 2.8.7).
            if ((flags & ~PackedRing.DescFWrite) != 0 && Breaches is { Strict: true } b)
                b.Report("2.8.19", Index, i, "only VIRTQ_DESC_F_WRITE in the flags of an indirect descriptor", $"flags 0x{flags:x4} ({PackedRing.DescribeFlags(flags)}) in indirect table entry {i}");
            var entryAddr = Unsafe.ReadUnaligned<ulong>(e);
            var entryLen = Unsafe.ReadUnaligned<uint>(e + 8);
            _recorder?.IndirectEntryRead(addr, i, entryAddr, entryLen, flags);
            AddBuffer(ref count, entryAddr, entryLen, (flags & PackedRing.DescFWrite) != 0, ref seenWritable, ref error, ref errorDescriptor, i);
        }
        return count;
    }

    private void AddBuffer(ref int count, ulong addr, uint len, bool writable, ref bool seenWritable, ref ChainError error, ref int errorDescriptor, int at)
    {
        if (writable)
            seenWritable = true;
        else if (seenWritable && error == ChainError.None)
        {
            error = ChainError.ReadableAfterWritable; // 2.8.17: device-writable elements after device-readable ones
            errorDescriptor = at;
        }
        if (!_scratch[count++].Set(_memory, addr, len, writable) && error == ChainError.None)
        {
            error = ChainError.BufferOutOfMemory;
            errorDescriptor = at;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ushort TakeToken(ushort id) => id < Size && _tokenSlots[id] == 0 ? id : TakeFreeToken();

    private ushort TakeFreeToken()
    {
        // An id at or above the size (legal, 2.8.13): any free token. One exists, since every
        // chain in flight holds at least one of the ring's slots.
        for (var i = 0; i < Size; i++)
        {
            var t = _tokenCursor;
            _tokenCursor = t + 1 == Size ? 0 : t + 1;
            if (_tokenSlots[t] == 0)
                return (ushort)t;
        }
        return 0;
    }

    private PopResult Corrupt(RingError error, int value)
    {
        LastRingError = error;
        LastRingErrorValue = value;
        return PopResult.RingCorrupt;
    }

    /// <summary>Returns a list to the driver at once: its used descriptor, and any of the batch before it, become visible now.</summary>
    public void AddUsed(ushort head, uint written)
    {
        WriteUsed(head, written, batch: false);
        _batchHead.Release();
    }

    /// <summary>
    /// Returns a list within a batch that <see cref="PublishUsed"/> or <see cref="PublishUsedForPoller"/>
    /// ends. The batch's first used descriptor gets its flags last, at the end of the batch, as
    /// 2.8.9 has a device do for a request made of several buffers; the others get theirs at once.
    /// Each used descriptor is still written in the order its list completed (2.8.12: the device
    /// MAY reorder descriptor writes once they are started), and each one's flags after its id
    /// and len (2.8.15). A driver polls only the next used slot (2.8.2), so it sees the batch
    /// whole and does not read the lines the device is still writing.
    /// </summary>
    public void AddUsedToBatch(ushort head, uint written) => WriteUsed(head, written, batch: true);

    private void WriteUsed(ushort head, uint written, bool batch)
    {
        if (head >= Size || _tokenSlots[head] == 0)
            return;
        int slots = _tokenSlots[head];
        var id = _tokenId[head];
        _tokenSlots[head] = 0;
        _idInFlight[id >> 6] &= ~(1UL << (id & 63));
        _inFlightCount--;
        _slotsInFlight -= slots;

        // 2.8.6: one used descriptor for the whole list, in the next used slot: id, and the
        // bytes written in len (2.8.4) with VIRTQ_DESC_F_WRITE saying len means something (2.8.3).
        var d = Slot(_nextUsed);
        Unsafe.WriteUnaligned(d + 8, written);
        Unsafe.WriteUnaligned(d + 12, id);
        var flags = (ushort)(PackedRing.UsedFlags(_usedWrap) | (written != 0 ? PackedRing.DescFWrite : 0));
        // 2.8.6: skip the list's other slots; the counter flips after the ring's last slot.
        var next = _nextUsed + slots;
        if (next >= Size)
            next -= Size;
        // Recorded before the driver can see it, so a recording never shows the driver reaping
        // (and reusing the slot) ahead of the device's write.
        _recorder?.Used(_nextUsed, id, written, flags, _usedWrap, slots, next);
        if (batch && !_batchHead.IsHeld && _recorder is null)
        {
            // The batch's first: its flags wait for the batch's end. A recording shows each used
            // descriptor as it is handed over, so while one is kept none waits.
            _batchHead.Hold(d, flags);
        }
        else
        {
            // 2.8.1 / 2.8.22: flags last, with release: the driver reads flags first (acquire), then id and len.
            Volatile.Write(ref *(ushort*)(d + 14), flags);
        }
        if (next < _nextUsed || slots == Size)
            _usedWrap = !_usedWrap;
        _nextUsed = (ushort)next;
        _usedSinceEvent += slots;
    }

    /// <summary>
    /// Makes the next <see cref="PublishUsed"/> ask for an interrupt whatever the driver's event
    /// suppression says: for a ring resumed from where another device process left it, which may
    /// have written used descriptors and died before notifying.
    /// </summary>
    public void SignalNextBatch() => _signalNext = true;

    private bool _signalNext; // signal the next used batch whatever the driver's event suppression says

    public bool PublishUsed()
    {
        _batchHead.Release();
        var count = _usedSinceEvent;
        if (count == 0)
            return false;
        _usedSinceEvent = 0;
        // Full fence: the used flags are visible before the Driver Event Suppression is read (2.8.10).
        Interlocked.MemoryBarrier();
        if (_signalNext)
        {
            _signalNext = false;
            _recorder?.PublishForced();
            return true;
        }
        var offWrap = Volatile.Read(ref *(ushort*)_driverEvent);
        var rawFlags = Volatile.Read(ref *(ushort*)(_driverEvent + 2));
        var flags = rawFlags & PackedRing.EventFlagsMask;
        if (Breaches is { Strict: true } && (rawFlags > PackedRing.EventFlagsDesc || (flags == PackedRing.EventFlagsDesc && (!EventIdx || (offWrap & 0x7fff) >= Size))))
            ReportEventBreach(rawFlags, offWrap);
        bool interrupt;
        if (flags == PackedRing.EventFlagsDisable)
            interrupt = false;
        else if (flags != PackedRing.EventFlagsDesc || !EventIdx || count >= Size)
            interrupt = true; // ENABLE, or a request for one descriptor the device cannot honour: notify
        else
            interrupt = PackedRing.NeedEvent(offWrap, _nextUsed, _usedWrap, count, Size);
        _recorder?.PublishDecision(offWrap, rawFlags, count, interrupt);
        return interrupt;
    }

    /// <summary>
    /// Ends a batch for a caller that will not interrupt whatever the driver asks (it knows the
    /// driver polls): writes the batch's first used flags (release), which hand the batch over;
    /// 2.8.21.3.1's full barrier comes before reading the Driver Event Suppression, and nothing is read here.
    /// </summary>
    public void PublishUsedForPoller()
    {
        if (_recorder is not null)
        {
            PublishUsed(); // a recording shows the decision the driver's state would give
            return;
        }
        _batchHead.Release();
        _usedSinceEvent = 0;
    }

    /// <summary>2.8.10 / 2.8.14: what the Driver Event Suppression structure may hold.</summary>
    private void ReportEventBreach(ushort rawFlags, ushort offWrap)
    {
        var b = Breaches!;
        if (rawFlags > PackedRing.EventFlagsDesc)
            b.Report("2.8.14", Index, -1, "desc_event_flags 0, 1 or 2 and the reserved bits 0", $"driver event suppression flags 0x{rawFlags:x4}");
        else if (!EventIdx)
            b.Report("2.8.10", Index, -1, "RING_EVENT_FLAGS_DESC only once VIRTIO_F_EVENT_IDX is negotiated", "RING_EVENT_FLAGS_DESC without VIRTIO_F_EVENT_IDX");
        else
            b.Report("2.8.14", Index, -1, $"desc_event_off below the queue size {Size}", $"desc_event_off {offWrap & 0x7fff}");
    }

    public void DisableNotifications()
    {
        Volatile.Write(ref *(ushort*)(_deviceEvent + 2), PackedRing.EventFlagsDisable); // 2.8.10: RING_EVENT_FLAGS_DISABLE
        _recorder?.DeviceEventWritten();
    }

    public bool Polled { get; set; }

    public bool EnableNotifications()
    {
        if (Polled)
        {
            // Notifications stay off: the worker looks at the ring before it sleeps.
            var seen = ReadFlags(Slot(_nextAvail));
            return PackedRing.IsAvail(seen, _availWrap) || PackedRing.IsUsed(seen, _availWrap);
        }
        if (EventIdx)
        {
            // 2.8.10: notify me when the descriptor at my position is made available.
            Volatile.Write(ref *(ushort*)_deviceEvent, LastAvailIndex);
            Volatile.Write(ref *(ushort*)(_deviceEvent + 2), PackedRing.EventFlagsDesc);
        }
        else
            Volatile.Write(ref *(ushort*)(_deviceEvent + 2), PackedRing.EventFlagsEnable);
        // Full fence: publish the request for notifications, then look at the ring again, or a
        // descriptor made available in between would be missed.
        Interlocked.MemoryBarrier();
        _recorder?.DeviceEventWritten();
        var flags = ReadFlags(Slot(_nextAvail));
        return PackedRing.IsAvail(flags, _availWrap) || PackedRing.IsUsed(flags, _availWrap);
    }

    /// <summary>Reads back descriptor <paramref name="slot"/> (for tracing).</summary>
    public (ulong Address, uint Length, ushort Id, ushort Flags) ReadDescriptor(int slot)
    {
        var d = Slot(slot % Size);
        return (Unsafe.ReadUnaligned<ulong>(d), Unsafe.ReadUnaligned<uint>(d + 8), Unsafe.ReadUnaligned<ushort>(d + 12), Volatile.Read(ref *(ushort*)(d + 14)));
    }

    public bool DriverAwaitsUsed(out uint position)
    {
        var offWrap = Volatile.Read(ref *(ushort*)_driverEvent);
        var flags = Volatile.Read(ref *(ushort*)(_driverEvent + 2)) & PackedRing.EventFlagsMask;
        position = offWrap | (uint)UsedIndex << 16;
        if (!EventIdx || flags != PackedRing.EventFlagsDesc)
            return false;
        // 2.8.10: the descriptor the driver asked to hear about, in the used lap's positions; at or
        // past the next used slot it is still to come, more than a lap behind it means nothing.
        int off = offWrap & ~PackedRing.EventWrapBit;
        if (off >= Size)
            return false;
        var e = ((offWrap & PackedRing.EventWrapBit) != 0) == _usedWrap ? off : off - Size;
        return e < _nextUsed && e >= _nextUsed - Size;
    }

    public string DescribeRing()
    {
        var (off, flags) = DriverEvent;
        var devOff = Volatile.Read(ref *(ushort*)_deviceEvent);
        var devFlags = Volatile.Read(ref *(ushort*)(_deviceEvent + 2));
        return $"packed: next available slot {_nextAvail} (wrap {(_availWrap ? 1 : 0)}, its flags {PackedRing.DescribeFlags(ReadFlags(Slot(_nextAvail)))}), "
            + $"next used slot {_nextUsed} (wrap {(_usedWrap ? 1 : 0)}), {_inFlightCount} in flight over {_slotsInFlight} slots, {_usedSinceEvent} used slots not published; "
            + $"driver event: {DescribeEvent(off, flags)}; device event: {DescribeEvent(devOff, devFlags)}";
    }

    private static string DescribeEvent(ushort offWrap, ushort flags) => (flags & PackedRing.EventFlagsMask) switch
    {
        PackedRing.EventFlagsEnable => "ENABLE",
        PackedRing.EventFlagsDisable => "DISABLE",
        PackedRing.EventFlagsDesc => $"DESC at slot {offWrap & 0x7fff} wrap {offWrap >> 15}",
        _ => $"flags 0x{flags:x4}",
    };

    /// <summary>The Driver Event Suppression structure as the device reads it (for tracing).</summary>
    public (ushort OffWrap, ushort Flags) DriverEvent => (Volatile.Read(ref *(ushort*)_driverEvent), Volatile.Read(ref *(ushort*)(_driverEvent + 2)));
}
