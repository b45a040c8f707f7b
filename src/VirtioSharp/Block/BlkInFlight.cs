using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Block;

/// <summary>
/// One queue's requests started through <see cref="Devices.IQueueIo"/> and not yet completed:
/// where each one's status byte is, what it asked for, and its iovec array. The arrays live in
/// pinned memory, because the kernel reads them after the call that started the I/O returns.
/// A fixed pool of slots bounds the memory; when every slot is busy the device works
/// synchronously. Used by the queue's worker only.
/// </summary>
internal sealed unsafe class BlkInFlight
{
    /// <summary>A request in flight, found by the head of its chain.</summary>
    public struct Entry
    {
        public byte* Status;
        public ulong Offset;
        public uint Length;     // data bytes asked for
        public uint Type;       // BlkRequestType
        public int Slot;        // -1 when the entry is unused; else its iovec slot
        public int IovCount;
        public long Started;    // Stopwatch timestamp when the chain was taken
    }

    private readonly Entry[] _byHead;
    private readonly IoVec[] _iov;      // pinned: Slots x IovPerSlot
    private readonly IoVec* _iovBase;
    private readonly int[] _free;
    private int _freeCount;

    public BlkInFlight(int queueSize, int slots, int iovPerSlot)
    {
        _byHead = new Entry[queueSize];
        for (var i = 0; i < _byHead.Length; i++)
            _byHead[i].Slot = -1;
        IovPerSlot = iovPerSlot;
        _iov = GC.AllocateUninitializedArray<IoVec>(slots * iovPerSlot, pinned: true);
        _iovBase = (IoVec*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_iov));
        _free = new int[slots];
        for (var i = 0; i < slots; i++)
            _free[i] = slots - 1 - i;
        _freeCount = slots;
    }

    public int IovPerSlot { get; }
    public int Count { get; private set; }

    /// <summary>Takes a slot for <paramref name="head"/>; false when none is free or the head is out of range or busy.</summary>
    public bool TryRent(ushort head, out int slot)
    {
        slot = -1;
        if (_freeCount == 0 || head >= _byHead.Length || _byHead[head].Slot >= 0)
            return false;
        slot = _free[--_freeCount];
        return true;
    }

    /// <summary>Gives back a slot: its I/O did not start, or its completion has been handled.</summary>
    public void Release(int slot) => _free[_freeCount++] = slot;

    public Span<IoVec> IovSpan(int slot) => new(_iovBase + slot * IovPerSlot, IovPerSlot);

    public IoVec* IovPointer(int slot) => _iovBase + slot * IovPerSlot;

    /// <summary>Records that the I/O for <paramref name="head"/> started.</summary>
    public void Track(ushort head, in Entry entry)
    {
        _byHead[head] = entry;
        Count++;
    }

    /// <summary>Takes the entry for a completed head; false if that head has nothing in flight.</summary>
    public bool TryTake(ushort head, out Entry entry)
    {
        if (head >= _byHead.Length || _byHead[head].Slot < 0)
        {
            entry = default;
            return false;
        }
        entry = _byHead[head];
        _byHead[head].Slot = -1;
        Count--;
        return true;
    }
}
