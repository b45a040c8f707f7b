using System.Runtime.InteropServices;

namespace VirtioSharp.Block;

/// <summary>
/// One aligned buffer per queue, allocated at start, through which a direct-I/O transfer whose
/// guest buffers are not aligned is copied. Each queue's worker uses only its own buffer, so no
/// lock is taken; a caller without a queue (or with one beyond those counted) gets a buffer of
/// its own for the call. Counts, per queue, the requests that went through it, those that went
/// through the page cache instead, and the direct writes handed to the queue's io_uring.
/// </summary>
internal sealed unsafe class BounceBuffers : IDisposable
{
    private sealed class Shard
    {
        public byte* Buffer;
        public long Bounced, PageCached, RingWrites;
    }

    private readonly Shard[] _shards; // one per queue, and a last one for callers without a queue

    public BounceBuffers(int queues, uint size, uint alignment)
    {
        Size = size;
        Alignment = alignment;
        _shards = new Shard[Math.Max(1, queues) + 1];
        for (var i = 0; i < _shards.Length; i++)
            _shards[i] = new Shard { Buffer = i < _shards.Length - 1 ? (byte*)NativeMemory.AlignedAlloc(size, alignment) : null };
    }

    /// <summary>Bytes in each buffer (a multiple of the alignment; larger transfers go through it in pieces).</summary>
    public uint Size { get; }
    public uint Alignment { get; }
    public int Queues => _shards.Length - 1;

    private Shard ShardOf(int queue) => (uint)queue < (uint)(_shards.Length - 1) ? _shards[queue] : _shards[^1];

    /// <summary>The queue's buffer; null for a caller without a queue, which allocates its own with <see cref="Rent"/>.</summary>
    public byte* For(int queue) => ShardOf(queue).Buffer;

    public byte* Rent() => (byte*)NativeMemory.AlignedAlloc(Size, Alignment);

    public static void Return(byte* buffer) => NativeMemory.AlignedFree(buffer);

    /// <summary>A request copied through the bounce buffer (its guest buffers were not aligned).</summary>
    public void CountBounced(int queue) => Interlocked.Increment(ref ShardOf(queue).Bounced);

    /// <summary>A request whose offset or length was not aligned, done through the page cache instead.</summary>
    public void CountPageCached(int queue) => Interlocked.Increment(ref ShardOf(queue).PageCached);

    /// <summary>An aligned write handed to the queue's io_uring on the O_DIRECT descriptor.</summary>
    public void CountRingWrite(int queue) => Interlocked.Increment(ref ShardOf(queue).RingWrites);

    public long Bounced(int queue) => Volatile.Read(ref ShardOf(queue).Bounced);
    public long RingWrites(int queue) => Volatile.Read(ref ShardOf(queue).RingWrites);
    public long PageCached(int queue) => Volatile.Read(ref ShardOf(queue).PageCached);

    public long TotalBounced
    {
        get
        {
            long t = 0;
            foreach (var s in _shards)
                t += Volatile.Read(ref s.Bounced);
            return t;
        }
    }

    public long TotalPageCached
    {
        get
        {
            long t = 0;
            foreach (var s in _shards)
                t += Volatile.Read(ref s.PageCached);
            return t;
        }
    }

    public void Dispose()
    {
        foreach (var s in _shards)
        {
            if (s.Buffer != null)
                NativeMemory.AlignedFree(s.Buffer);
            s.Buffer = null;
        }
    }
}
