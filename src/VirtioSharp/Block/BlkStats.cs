namespace VirtioSharp.Block;

/// <summary>
/// Request counters of one device, by type and outcome. Each queue counts in its own shard with
/// plain stores (a queue is drained by one thread at a time), so the per-request path takes no
/// atomic operation and queues never share a cache line; readers sum the shards.
/// </summary>
public sealed class BlkStats
{
    private sealed class Shard
    {
        public readonly long[] ByType = new long[16];
        public long BytesRead, BytesWritten, IoErr, Unsupp, Malformed, Async;
    }

    private readonly Shard[] _shards;

    public BlkStats(int queues)
    {
        _shards = new Shard[Math.Max(1, queues)];
        for (var i = 0; i < _shards.Length; i++)
            _shards[i] = new Shard();
    }

    internal void Count(int queue, uint type, BlkStatus status, ulong bytes)
    {
        var s = _shards[queue];
        Volatile.Write(ref s.ByType[type < 15 ? type : 15], s.ByType[type < 15 ? type : 15] + 1);
        switch (status)
        {
            case BlkStatus.IoErr: Volatile.Write(ref s.IoErr, s.IoErr + 1); break;
            case BlkStatus.Unsupp: Volatile.Write(ref s.Unsupp, s.Unsupp + 1); break;
            default:
                if (type == (uint)BlkRequestType.In) Volatile.Write(ref s.BytesRead, s.BytesRead + (long)bytes);
                else if (type == (uint)BlkRequestType.Out) Volatile.Write(ref s.BytesWritten, s.BytesWritten + (long)bytes);
                break;
        }
    }

    /// <summary>A request that completed through the queue's asynchronous I/O.</summary>
    internal void CountAsync(int queue)
    {
        var s = _shards[queue];
        Volatile.Write(ref s.Async, s.Async + 1);
    }

    internal void CountMalformed(int queue)
    {
        var s = _shards[queue];
        Volatile.Write(ref s.Malformed, s.Malformed + 1);
    }

    private long Sum(Func<Shard, long> field)
    {
        long total = 0;
        foreach (var s in _shards)
            total += field(s);
        return total;
    }

    public long Requests(BlkRequestType type) => Sum(s => Volatile.Read(ref s.ByType[(int)type]));
    public long BytesRead => Sum(s => Volatile.Read(ref s.BytesRead));
    public long BytesWritten => Sum(s => Volatile.Read(ref s.BytesWritten));
    public long IoErrors => Sum(s => Volatile.Read(ref s.IoErr));
    public long Unsupported => Sum(s => Volatile.Read(ref s.Unsupp));
    public long Malformed => Sum(s => Volatile.Read(ref s.Malformed));
    /// <summary>Requests whose I/O ran asynchronously (in flight alongside others of the same queue).</summary>
    public long AsyncCompleted => Sum(s => Volatile.Read(ref s.Async));

    public long Total
    {
        get
        {
            long t = 0;
            foreach (var s in _shards)
            {
                for (var i = 0; i < s.ByType.Length; i++)
                    t += Volatile.Read(ref s.ByType[i]);
            }
            return t;
        }
    }
}
