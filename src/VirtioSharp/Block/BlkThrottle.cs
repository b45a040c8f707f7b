using System.Diagnostics;
using System.Runtime.InteropServices;

namespace VirtioSharp.Block;

/// <summary>
/// The limits of one disk, shared by its queues: up to six <see cref="TokenBucket"/>s. A queue
/// takes the next chain only while no bucket is in debt (<see cref="WaitTicks"/> is 0); the
/// request then pays what it costs: reads the read and total buckets, writes (and discards and
/// write-zeroes, as requests) the write and total buckets. A delayed request stays in the
/// available ring until its queue's worker wakes on a timer; nothing is failed. Each queue keeps
/// its own throttled-time account, written by its worker only.
/// </summary>
public sealed class BlkThrottle
{
    [StructLayout(LayoutKind.Explicit, Size = 128)] // a cache line (and its neighbour) per queue
    private struct QueueAccount
    {
        [FieldOffset(64)] public long Since;    // when the queue started waiting, 0 if it is not
        [FieldOffset(72)] public long Ticks;    // time spent waiting, finished waits
        [FieldOffset(80)] public long Waits;
    }

    private readonly TokenBucket? _iopsTotal, _iopsRead, _iopsWrite, _bpsTotal, _bpsRead, _bpsWrite;
    private readonly TokenBucket?[] _all;
    private readonly QueueAccount[] _queues;

    public BlkThrottle(BlkLimits limits, int queues)
    {
        Limits = limits;
        _iopsTotal = Make(limits.IopsTotal, limits.IopsBurst);
        _iopsRead = Make(limits.IopsRead, limits.IopsBurst);
        _iopsWrite = Make(limits.IopsWrite, limits.IopsBurst);
        _bpsTotal = Make(limits.BpsTotal, limits.BpsBurst);
        _bpsRead = Make(limits.BpsRead, limits.BpsBurst);
        _bpsWrite = Make(limits.BpsWrite, limits.BpsBurst);
        _all = [.. new[] { _iopsTotal, _iopsRead, _iopsWrite, _bpsTotal, _bpsRead, _bpsWrite }.Where(b => b != null)];
        _queues = new QueueAccount[Math.Max(1, queues)];
    }

    private static TokenBucket? Make(double? rate, double burst) => rate is { } r ? new TokenBucket(r, burst) : null;

    public BlkLimits Limits { get; }

    /// <summary>Stopwatch ticks until <paramref name="queue"/> may take its next request; 0 when it may now. Keeps the queue's throttled-time account.</summary>
    public long WaitTicks(int queue)
    {
        var now = Stopwatch.GetTimestamp();
        long wait = 0;
        foreach (var b in _all)
            wait = Math.Max(wait, b!.WaitTicks(now));
        ref var a = ref _queues[queue];
        if (wait > 0)
        {
            if (a.Since == 0)
                Volatile.Write(ref a.Since, now);
        }
        else if (a.Since != 0)
        {
            Volatile.Write(ref a.Ticks, a.Ticks + (now - a.Since));
            Volatile.Write(ref a.Waits, a.Waits + 1);
            Volatile.Write(ref a.Since, 0);
        }
        return wait;
    }

    /// <summary>A request of <paramref name="type"/> moving <paramref name="bytes"/> started: it pays its cost.</summary>
    public void Charge(BlkRequestType type, ulong bytes)
    {
        TokenBucket? iops, bps;
        switch (type)
        {
            case BlkRequestType.In:
                (iops, bps) = (_iopsRead, _bpsRead);
                break;
            case BlkRequestType.Out:
            case BlkRequestType.Discard:
            case BlkRequestType.WriteZeroes:
                (iops, bps) = (_iopsWrite, _bpsWrite);
                if (type != BlkRequestType.Out)
                    bytes = 0; // no data moves through the guest's buffers
                break;
            default:
                return; // flush, get-id: not limited (as QEMU's throttling)
        }
        var now = Stopwatch.GetTimestamp();
        iops?.Take(1, now);
        _iopsTotal?.Take(1, now);
        if (bytes != 0)
        {
            bps?.Take(bytes, now);
            _bpsTotal?.Take(bytes, now);
        }
    }

    /// <summary>Seconds <paramref name="queue"/> has spent waiting for the limits (an ongoing wait included).</summary>
    public double ThrottledSeconds(int queue)
    {
        ref var a = ref _queues[queue];
        var ticks = Volatile.Read(ref a.Ticks);
        var since = Volatile.Read(ref a.Since);
        if (since != 0)
            ticks += Math.Max(0, Stopwatch.GetTimestamp() - since);
        return (double)ticks / Stopwatch.Frequency;
    }

    /// <summary>Times <paramref name="queue"/> had to wait for the limits (finished waits).</summary>
    public long Waits(int queue) => Volatile.Read(ref _queues[queue].Waits);
}
