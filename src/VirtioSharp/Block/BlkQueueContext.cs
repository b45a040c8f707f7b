using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Block;

/// <summary>
/// The driver's state for one virtqueue: the ring, a lock around it, the request slots and a
/// semaphore that admits at most as many requests as the ring can hold.
/// </summary>
internal sealed class BlkQueueContext
{
    private readonly Stack<BlkRequestSlot> _free;
    private readonly BlkRequestSlot?[] _byHead;

    public BlkQueueContext(IDriverQueue queue, GuestMemory memory, GuestAllocator allocator, int depth, uint bounceSize, bool indirect, bool inline = false)
    {
        Queue = queue;
        Memory = memory;
        Depth = depth;
        Indirect = indirect;
        BounceSize = bounceSize;
        Capacity = new SemaphoreSlim(depth, depth);
        _byHead = new BlkRequestSlot?[queue.Size];
        _free = new Stack<BlkRequestSlot>(depth);
        for (var i = 0; i < depth; i++)
        {
            var header = allocator.Allocate(BlkLayout.HeaderSize, 16);
            var status = allocator.Allocate(16, 16);
            var table = indirect ? allocator.Allocate(3 * SplitRing.DescriptorSize, 16) : 0;
            var bounce = allocator.Allocate(bounceSize, 4096);
            _free.Push(new BlkRequestSlot(this, header, status, table, bounce, bounceSize, inline));
        }
        Completed = new BlkRequestSlot[queue.Size];
    }

    public IDriverQueue Queue { get; }
    public GuestMemory Memory { get; }
    public int Depth { get; }
    public bool Indirect { get; }
    public uint BounceSize { get; }
    public Lock Lock { get; } = new();
    public SemaphoreSlim Capacity { get; }
    /// <summary>Scratch for the interrupt path: slots completed in one pass (used under <see cref="Lock"/>).</summary>
    public BlkRequestSlot?[] Completed { get; }
    public int Outstanding { get; private set; }
    private long _sequence;

    /// <summary>Under <see cref="Lock"/>: the next submission number.</summary>
    public long NextSequence() => ++_sequence;

    /// <summary>Takes a free slot; the caller has passed <see cref="Capacity"/>.</summary>
    public BlkRequestSlot Rent()
    {
        lock (Lock)
            return _free.Pop();
    }

    public void Return(BlkRequestSlot slot)
    {
        lock (Lock)
            _free.Push(slot);
        Capacity.Release();
    }

    /// <summary>Under <see cref="Lock"/>: records that <paramref name="slot"/> went out as chain <paramref name="head"/>.</summary>
    public void Track(ushort head, BlkRequestSlot slot)
    {
        slot.Head = head;
        _byHead[head] = slot;
        Outstanding++;
    }

    /// <summary>Under <see cref="Lock"/>: the slot for a used head, or null if none was outstanding.</summary>
    public BlkRequestSlot? Untrack(ushort head)
    {
        if (head >= _byHead.Length)
            return null;
        var slot = _byHead[head];
        _byHead[head] = null;
        if (slot is not null)
            Outstanding--;
        return slot;
    }

    /// <summary>Under <see cref="Lock"/>: every outstanding slot, removed from tracking.</summary>
    public List<BlkRequestSlot> UntrackAll()
    {
        var all = new List<BlkRequestSlot>();
        for (var i = 0; i < _byHead.Length; i++)
        {
            if (_byHead[i] is { } s)
            {
                all.Add(s);
                _byHead[i] = null;
            }
        }
        Outstanding = 0;
        return all;
    }
}
