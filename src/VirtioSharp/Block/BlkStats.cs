using System.Runtime.InteropServices;

namespace VirtioSharp.Block;

/// <summary>
/// Request counters of one device, by type and outcome. Each queue counts in its own shard with
/// plain stores (a queue is drained by one thread at a time), so the per-request path takes no
/// atomic operation and queues never share a cache line (the shards are made together, so what
/// they write is padded by a cache line on each side); readers sum the shards.
/// </summary>
public sealed class BlkStats
{
    private const int Types = 16;
    private const int PadLongs = 8; // 64 bytes after each array's last counter

    private sealed class Shard
    {
        public readonly long[] ByType = new long[Types + PadLongs];
        public readonly long[] Latency = new long[LatencyBuckets + 1 + PadLongs];
        public Counters C;
    }

    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct Counters
    {
        [FieldOffset(64)] public long BytesRead;
        [FieldOffset(72)] public long BytesWritten;
        [FieldOffset(80)] public long IoErr;
        [FieldOffset(88)] public long Unsupp;
        [FieldOffset(96)] public long Malformed;
        [FieldOffset(104)] public long Async;
        [FieldOffset(112)] public long LatencyNanos;
    }

    /// <summary>Latency buckets: bucket i counts requests that took at most 2^i microseconds; one more counts the rest.</summary>
    public const int LatencyBuckets = 21;

    /// <summary>The upper bound of latency bucket <paramref name="i"/> in seconds (infinity for the last).</summary>
    public static double LatencyBound(int i) => i < LatencyBuckets ? (1L << i) * 1e-6 : double.PositiveInfinity;

    private static readonly long TicksPerMicrosecond = Math.Max(1, System.Diagnostics.Stopwatch.Frequency / 1_000_000);

    private readonly Shard[] _shards;

    public BlkStats(int queues)
    {
        _shards = new Shard[Math.Max(1, queues)];
        for (var i = 0; i < _shards.Length; i++)
            _shards[i] = new Shard();
    }

    internal void Count(int queue, uint type, BlkStatus status, ulong bytes, long started)
    {
        var s = _shards[queue];
        // Time from taking the chain to its status: bucket ceil(log2(microseconds)).
        var ticks = System.Diagnostics.Stopwatch.GetTimestamp() - started;
        var us = (ulong)Math.Max(1, ticks / TicksPerMicrosecond);
        var bucket = Math.Min(LatencyBuckets, 64 - System.Numerics.BitOperations.LeadingZeroCount(us - 1));
        Volatile.Write(ref s.Latency[bucket], s.Latency[bucket] + 1);
        Volatile.Write(ref s.C.LatencyNanos, s.C.LatencyNanos + ticks * 1_000_000_000 / System.Diagnostics.Stopwatch.Frequency);
        Volatile.Write(ref s.ByType[type < 15 ? type : 15], s.ByType[type < 15 ? type : 15] + 1);
        switch (status)
        {
            case BlkStatus.IoErr: Volatile.Write(ref s.C.IoErr, s.C.IoErr + 1); break;
            case BlkStatus.Unsupp: Volatile.Write(ref s.C.Unsupp, s.C.Unsupp + 1); break;
            default:
                if (type == (uint)BlkRequestType.In) Volatile.Write(ref s.C.BytesRead, s.C.BytesRead + (long)bytes);
                else if (type == (uint)BlkRequestType.Out) Volatile.Write(ref s.C.BytesWritten, s.C.BytesWritten + (long)bytes);
                break;
        }
    }

    /// <summary>A request that completed through the queue's asynchronous I/O.</summary>
    internal void CountAsync(int queue)
    {
        var s = _shards[queue];
        Volatile.Write(ref s.C.Async, s.C.Async + 1);
    }

    internal void CountMalformed(int queue)
    {
        var s = _shards[queue];
        Volatile.Write(ref s.C.Malformed, s.C.Malformed + 1);
    }

    private long Sum(Func<Shard, long> field)
    {
        long total = 0;
        foreach (var s in _shards)
            total += field(s);
        return total;
    }

    public long Requests(BlkRequestType type) => Sum(s => Volatile.Read(ref s.ByType[(int)type]));
    public long BytesRead => Sum(s => Volatile.Read(ref s.C.BytesRead));
    public long BytesWritten => Sum(s => Volatile.Read(ref s.C.BytesWritten));
    public long IoErrors => Sum(s => Volatile.Read(ref s.C.IoErr));
    public long Unsupported => Sum(s => Volatile.Read(ref s.C.Unsupp));
    public long Malformed => Sum(s => Volatile.Read(ref s.C.Malformed));
    /// <summary>Requests whose I/O ran asynchronously (in flight alongside others of the same queue).</summary>
    public long AsyncCompleted => Sum(s => Volatile.Read(ref s.C.Async));

    public int Queues => _shards.Length;

    /// <summary>One queue's counters, read at the moment of the call (each value on its own; a scrape, not a transaction).</summary>
    public QueueSnapshot Snapshot(int queue)
    {
        var s = _shards[queue];
        var byType = new long[Types];
        for (var i = 0; i < byType.Length; i++)
            byType[i] = Volatile.Read(ref s.ByType[i]);
        var latency = new long[LatencyBuckets + 1];
        for (var i = 0; i < latency.Length; i++)
            latency[i] = Volatile.Read(ref s.Latency[i]);
        return new QueueSnapshot(byType, Volatile.Read(ref s.C.BytesRead), Volatile.Read(ref s.C.BytesWritten), Volatile.Read(ref s.C.IoErr),
            Volatile.Read(ref s.C.Unsupp), Volatile.Read(ref s.C.Malformed), Volatile.Read(ref s.C.Async), latency, Volatile.Read(ref s.C.LatencyNanos) * 1e-9);
    }

    /// <summary>A queue's counters: requests by type (index = VIRTIO_BLK_T_*), bytes, errors by status, latency buckets (see <see cref="LatencyBound"/>).</summary>
    public sealed record QueueSnapshot(long[] ByType, long BytesRead, long BytesWritten, long IoErrors, long Unsupported, long Malformed,
        long Async, long[] Latency, double LatencySeconds);

    public long Total
    {
        get
        {
            long t = 0;
            foreach (var s in _shards)
            {
                for (var i = 0; i < Types; i++)
                    t += Volatile.Read(ref s.ByType[i]);
            }
            return t;
        }
    }
}
