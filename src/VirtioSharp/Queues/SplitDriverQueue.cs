using System.Runtime.CompilerServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// The driver's half of a split virtqueue (2.7.13, 2.7.14). Free descriptors are kept in a
/// list threaded through a private copy of the next fields, so nothing the device writes can
/// corrupt the driver's bookkeeping. Not thread-safe: callers hold a lock.
/// </summary>
public sealed unsafe class SplitDriverQueue : IDriverQueue
{
    private readonly byte* _desc;
    private readonly byte* _avail;
    private readonly byte* _used;
    private readonly ushort[] _next;       // driver-private copy of each descriptor's next
    private readonly ushort[] _chainLength; // per head: descriptors in its chain; 0 = not in flight
    private ushort _freeHead;
    private int _free;
    private ushort _availShadow;
    private ushort _availPublished;
    private ushort _lastUsed;
    private ushort _usedSeen;              // the device's used idx as last read (checked); elements up to it are known
    private bool _interruptsOff;           // DisableInterrupts was called and EnableInterrupts not since
    private readonly GuestMemory _memory;
    private SplitQueueRecorder? _recorder; // null unless someone records
    // Ends the object on a cache line of its own, so the fields above (written by the driver's
    // thread) never share a line with an object the device's thread writes.
#pragma warning disable CS0169 // never read: it only takes room
    private CacheLinePad _pad;
#pragma warning restore CS0169

    public SplitDriverQueue(int index, int size, GuestMemory memory, ulong descAddr, ulong availAddr, ulong usedAddr, bool eventIdx)
    {
        if (!SplitRing.IsValidSize(size))
            throw new ArgumentOutOfRangeException(nameof(size), $"queue size {size} is not a power of two in 1..32768 (2.7)");
        Index = index;
        Size = (ushort)size;
        EventIdx = eventIdx;
        DescriptorTable = descAddr;
        DriverArea = availAddr;
        DeviceArea = usedAddr;
        _memory = memory;
        _desc = (byte*)memory.GetPointer(descAddr, SplitQueueLayout.DescriptorTableSize(size));
        _avail = (byte*)memory.GetPointer(availAddr, SplitQueueLayout.AvailRingSize(size));
        _used = (byte*)memory.GetPointer(usedAddr, SplitQueueLayout.UsedRingSize(size));
        _next = PaddedArray.Of<ushort>(size);
        _chainLength = PaddedArray.Of<ushort>(size);
        for (var i = 0; i < size; i++)
            _next[i] = (ushort)((i + 1) % size);
        _freeHead = 0;
        _free = size;
    }

    /// <summary>Lays the queue out contiguously in memory from <paramref name="allocator"/>.</summary>
    public static SplitDriverQueue Allocate(int index, int size, GuestAllocator allocator, bool eventIdx)
    {
        var layout = SplitQueueLayout.For(size);
        var baseAddr = allocator.Allocate(layout.TotalSize, 4096);
        return new SplitDriverQueue(index, size, allocator.Memory, baseAddr + layout.DescriptorTableOffset,
            baseAddr + layout.AvailRingOffset, baseAddr + layout.UsedRingOffset, eventIdx);
    }

    public int Index { get; }
    public ushort Size { get; }
    public bool EventIdx { get; }
    public ulong DescriptorTable { get; }
    public ulong DriverArea { get; }
    public ulong DeviceArea { get; }
    public int FreeDescriptors => _free;

    /// <summary>Reports what this half does as ring events while <paramref name="sink"/> is active; null stops it.</summary>
    public void Record(ITraceSink? sink, bool indirect) =>
        _recorder = sink is null ? null : new SplitQueueRecorder(sink, _memory, Index, Size, DescriptorTable, DriverArea, DeviceArea, EventIdx, indirect, announce: false);
    public ushort AvailIndex => _availShadow;

    private ref ushort AvailFlags => ref *(ushort*)_avail;
    private ref ushort AvailIdx => ref *(ushort*)(_avail + 2);
    private ref ushort AvailRingSlot(int slot) => ref *(ushort*)(_avail + 4 + 2 * slot);
    private ref ushort UsedEvent => ref *(ushort*)(_avail + 4 + 2 * Size);
    private ushort UsedFlags => Volatile.Read(ref *(ushort*)_used);
    private ushort UsedIdx => Volatile.Read(ref *(ushort*)(_used + 2));
    private ushort AvailEvent => Volatile.Read(ref *(ushort*)(_used + 4 + 8 * Size));

    /// <summary>Reads back descriptor <paramref name="i"/> (for tracing).</summary>
    public (ulong Address, uint Length, ushort Flags, ushort Next) ReadDescriptor(ushort i)
    {
        var d = _desc + i * SplitRing.DescriptorSize;
        return (Unsafe.ReadUnaligned<ulong>(d), Unsafe.ReadUnaligned<uint>(d + 8), Unsafe.ReadUnaligned<ushort>(d + 12), Unsafe.ReadUnaligned<ushort>(d + 14));
    }

    public bool TryAdd(ReadOnlySpan<DriverBuffer> buffers, out ushort head)
    {
        head = 0;
        if (buffers.Length == 0 || buffers.Length > _free)
            return false;
        // 2.7.13.1: place the buffers into free descriptors, chained with NEXT.
        head = _freeHead;
        var index = head;
        var seenWritable = false;
        for (var i = 0; i < buffers.Length; i++)
        {
            var b = buffers[i];
            if (!b.DeviceWritable && seenWritable)
                throw new ArgumentException("device-readable buffers must come before device-writable ones (2.7.4.2)");
            seenWritable |= b.DeviceWritable;
            var last = i == buffers.Length - 1;
            var flags = (ushort)((b.DeviceWritable ? SplitRing.DescFWrite : 0) | (last ? 0 : SplitRing.DescFNext));
            var d = _desc + index * SplitRing.DescriptorSize;
            Unsafe.WriteUnaligned(d, b.Address);
            Unsafe.WriteUnaligned(d + 8, b.Length);
            Unsafe.WriteUnaligned(d + 12, flags);
            Unsafe.WriteUnaligned(d + 14, last ? (ushort)0 : _next[index]);
            _recorder?.DescriptorWritten(head, i, buffers.Length, index, b.Address, b.Length, flags, last ? (ushort)0 : _next[index]);
            if (!last)
                index = _next[index];
        }
        _freeHead = _next[index];
        _free -= buffers.Length;
        _chainLength[head] = (ushort)buffers.Length;

        // 2.7.13.2: put the head into the next available ring slot.
        AvailRingSlot(_availShadow & (Size - 1)) = head;
        _recorder?.AvailWritten(head, _availShadow);
        _availShadow++;
        return true;
    }

    /// <summary>
    /// 2.7.5.3: makes one descriptor with VIRTQ_DESC_F_INDIRECT pointing at a table of
    /// <paramref name="count"/> descriptors the caller wrote at <paramref name="table"/>.
    /// </summary>
    public bool TryAddIndirect(ulong table, int count, out ushort head)
    {
        head = 0;
        if (_free == 0 || count <= 0 || count > Size)
            return false;
        head = _freeHead;
        var d = _desc + head * SplitRing.DescriptorSize;
        Unsafe.WriteUnaligned(d, table);
        Unsafe.WriteUnaligned(d + 8, (uint)(count * SplitRing.DescriptorSize));
        Unsafe.WriteUnaligned(d + 12, SplitRing.DescFIndirect);
        Unsafe.WriteUnaligned(d + 14, (ushort)0);
        _freeHead = _next[head];
        _free--;
        _chainLength[head] = 1;
        _recorder?.IndirectWritten(head, table, count);
        AvailRingSlot(_availShadow & (Size - 1)) = head;
        _recorder?.AvailWritten(head, _availShadow);
        _availShadow++;
        return true;
    }

    /// <summary>Writes a chain of descriptors into an indirect table (2.7.5.3.1: no INDIRECT inside).</summary>
    public static void WriteIndirectTable(Span<byte> table, ReadOnlySpan<DriverBuffer> buffers)
    {
        for (var i = 0; i < buffers.Length; i++)
        {
            var b = buffers[i];
            var e = table.Slice(i * SplitRing.DescriptorSize, SplitRing.DescriptorSize);
            var last = i == buffers.Length - 1;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(e, b.Address);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(e[8..], b.Length);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(e[12..], (ushort)((b.DeviceWritable ? SplitRing.DescFWrite : 0) | (last ? 0 : SplitRing.DescFNext)));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(e[14..], last ? (ushort)0 : (ushort)(i + 1));
        }
    }

    void IDriverQueue.WriteIndirectTable(Span<byte> table, ReadOnlySpan<DriverBuffer> buffers) => WriteIndirectTable(table, buffers);

    public bool Publish()
    {
        var oldIdx = _availPublished;
        var newIdx = _availShadow;
        if (oldIdx == newIdx)
            return false;
        // Recorded before the store below lets the device take the heads: a polling device would
        // otherwise read the available ring, in the recording, before its index moved.
        _recorder?.Publishing(oldIdx, newIdx);
        // 2.7.13.3.1: ring entries must be visible before idx (release store).
        Volatile.Write(ref AvailIdx, newIdx);
        _availPublished = newIdx;
        // 2.7.13.4: full fence between publishing idx and reading the device's suppression state.
        Interlocked.MemoryBarrier();
        if (_recorder is { } r)
        {
            var availEvent = AvailEvent;
            var usedFlags = UsedFlags;
            var notify = EventIdx ? SplitRing.NeedEvent(availEvent, newIdx, oldIdx) : (usedFlags & SplitRing.UsedFNoNotify) == 0;
            r.Published(oldIdx, newIdx, EventIdx, availEvent, usedFlags, notify);
            return notify;
        }
        if (EventIdx)
            return SplitRing.NeedEvent(AvailEvent, newIdx, oldIdx);
        return (UsedFlags & SplitRing.UsedFNoNotify) == 0;
    }

    /// <summary>
    /// Publishes the available index without deciding on a notification, for a caller that will
    /// not notify whatever the device asks (it knows the device polls). 2.7.13.4 asks for the full
    /// barrier only before reading the device's flags or avail_event; nothing is read here, so the
    /// release store of idx (2.7.13.3.1) is all it takes.
    /// </summary>
    public void PublishForPoller()
    {
        if (_recorder is not null)
        {
            Publish(); // a recording shows the decision the device's state would give
            return;
        }
        var newIdx = _availShadow;
        if (_availPublished == newIdx)
            return;
        Volatile.Write(ref AvailIdx, newIdx); // 2.7.13.3.1: ring entries visible before idx
        _availPublished = newIdx;
    }

    public bool TryTakeUsed(out ushort head, out uint length, out UsedError error)
    {
        head = 0;
        length = 0;
        error = UsedError.None;
        if (_lastUsed == _usedSeen)
        {
            // The device's used idx is read only when every element known from the last read is
            // taken: the line it sits on moves between the cores each time the device adds one.
            var usedIdx = UsedIdx; // acquire: elements below it are visible (2.7.8.2)
            if (usedIdx == _lastUsed)
                return false;
            if ((ushort)(usedIdx - _lastUsed) > Size)
            {
                error = UsedError.UsedIndexTooFarAhead;
                return false;
            }
            _usedSeen = usedIdx;
        }
        var elem = Unsafe.ReadUnaligned<ulong>(_used + 4 + 8 * (_lastUsed & (Size - 1)));
        var id = (uint)elem;
        length = (uint)(elem >> 32);
        _lastUsed++;
        // The device is not trusted: the id must name a chain we have outstanding.
        if (id >= Size || _chainLength[id] == 0)
        {
            error = UsedError.UnknownId;
            head = (ushort)Math.Min(id, ushort.MaxValue);
            return false;
        }
        head = (ushort)id;
        FreeChain(head);
        _recorder?.UsedTaken(head, length, (ushort)(_lastUsed - 1));
        // With interrupts off or while polling, used_event stays where it was: no store and no
        // barrier per element (the device may interrupt once more when it passes it; 2.7.7 makes
        // that harmless).
        if (EventIdx && !_interruptsOff && !Polling)
        {
            _recorder?.UsedEvent(_lastUsed); // before the device can act on it
            Volatile.Write(ref UsedEvent, _lastUsed); // 2.7.7: interrupt me when the next one is used
            // 2.7.14: full barrier between re-enabling and the next read of used idx, or an
            // element the device adds meanwhile is neither seen here nor interrupted for.
            Interlocked.MemoryBarrier();
        }
        return true;
    }

    private void FreeChain(ushort head)
    {
        int n = _chainLength[head];
        _chainLength[head] = 0;
        var tail = head;
        for (var i = 1; i < n; i++)
            tail = _next[tail];
        _next[tail] = _freeHead;
        _freeHead = head;
        _free += n;
    }

    /// <summary>
    /// Starts the ring afresh at the same addresses, as after a device reset (2.7: a new device
    /// begins at index 0): every descriptor free, all three areas zeroed. What was outstanding is
    /// the caller's to make available again.
    /// </summary>
    public void Restart()
    {
        new Span<byte>(_desc, (int)SplitQueueLayout.DescriptorTableSize(Size)).Clear();
        new Span<byte>(_avail, (int)SplitQueueLayout.AvailRingSize(Size)).Clear();
        new Span<byte>(_used, (int)SplitQueueLayout.UsedRingSize(Size)).Clear();
        for (var i = 0; i < Size; i++)
        {
            _next[i] = (ushort)((i + 1) % Size);
            _chainLength[i] = 0;
        }
        _freeHead = 0;
        _free = Size;
        _availShadow = _availPublished = _lastUsed = _usedSeen = 0;
        _interruptsOff = false;
        Interlocked.MemoryBarrier(); // the zeroed ring is visible before the device is told its addresses
    }

    public void DisableInterrupts()
    {
        _interruptsOff = true;
        if (!EventIdx)
        {
            _recorder?.AvailFlags(AvailFlags, SplitRing.AvailFNoInterrupt);
            Volatile.Write(ref AvailFlags, SplitRing.AvailFNoInterrupt);
        }
    }

    public bool Polling { get; private set; }

    public void StartPolling()
    {
        Polling = true;
        if (EventIdx)
        {
            // 2.7.7.2: the device interrupts when used idx passes used_event; one behind what the
            // driver has taken is passed only after a full wrap of the index (one spurious
            // interrupt in 65536, which a polling driver ignores).
            _recorder?.UsedEvent((ushort)(_lastUsed - 1));
            Volatile.Write(ref UsedEvent, (ushort)(_lastUsed - 1));
        }
        else
            DisableInterrupts();
    }

    public bool StopPolling()
    {
        Polling = false;
        return EnableInterrupts();
    }

    public bool EnableInterrupts()
    {
        _interruptsOff = false;
        if (EventIdx)
        {
            _recorder?.UsedEvent(_lastUsed);
            Volatile.Write(ref UsedEvent, _lastUsed);
        }
        else
        {
            _recorder?.AvailFlags(AvailFlags, 0);
            Volatile.Write(ref AvailFlags, (ushort)0);
        }
        Interlocked.MemoryBarrier();
        return UsedIdx != _lastUsed;
    }
}
