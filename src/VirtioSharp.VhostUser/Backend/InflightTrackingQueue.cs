using VirtioSharp.Queues;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// A split device queue that keeps its <see cref="SplitInflightRecord"/> as requests are taken
/// and returned, and hands out the requests a previous back-end left in flight before any new
/// one. It wraps the queue, so the device and the ring code know nothing of it. Per request it
/// adds a few stores into the shared area: no allocation, no system call.
/// </summary>
internal sealed class InflightTrackingQueue : IDeviceQueue
{
    private readonly SplitDeviceQueue _inner;
    private readonly SplitInflightRecord _record;
    private readonly ushort[] _resubmit;
    private int _resubmitted;
    private ulong _counter;
    private ushort _usedIdx;

    public InflightTrackingQueue(SplitDeviceQueue inner, SplitInflightRecord record, in SplitInflightRecord.Plan plan, ushort usedIdx)
    {
        _inner = inner;
        _record = record;
        _resubmit = plan.Resubmit;
        _counter = plan.NextCounter;
        _usedIdx = usedIdx;
    }

    public SplitDeviceQueue Inner => _inner;
    public int Index => _inner.Index;
    public ushort Size => _inner.Size;
    public bool EventIdx => _inner.EventIdx;
    public RingError LastRingError => _inner.LastRingError;
    public int LastRingErrorValue => _inner.LastRingErrorValue;
    public ushort LastAvailIndex => _inner.LastAvailIndex;
    public int InFlight => _inner.InFlight;
    public string DescribeRing() => _inner.DescribeRing();
    public bool DriverAwaitsUsed(out uint position) => _inner.DriverAwaitsUsed(out position);
    /// <summary>Requests from the previous back-end not handed out yet.</summary>
    public int ResubmitPending => _resubmit.Length - _resubmitted;

    public PopResult TryPop(out DescriptorChain chain)
    {
        // vhost-user.rst, reconnecting: resubmit what was in flight, in counter order, first.
        var result = _resubmitted < _resubmit.Length
            ? _inner.TryTakeHead(_resubmit[_resubmitted++], out chain)
            : _inner.TryPop(out chain);
        if (result == PopResult.Chain)
            _record.Take(chain.Head, _counter++); // counter, global counter + 1, inflight = 1
        return result;
    }

    public void AddUsed(ushort head, uint written)
    {
        var tracked = head < Size;
        if (tracked)
            _record.BeginUsed(head);  // desc[i].next = last_batch_head; last_batch_head = i
        _inner.AddUsed(head, written); // used element, then used idx + 1 (a batch of one)
        _usedIdx++;
        if (tracked)
            _record.EndUsed(head, _usedIdx); // inflight = 0; used_idx = used idx
    }

    /// <summary>
    /// As <see cref="AddUsed"/>: the record's used_idx follows the ring's used idx element by
    /// element, so a batch here is a batch of one (used idx is never left behind for PublishUsed).
    /// </summary>
    public void AddUsedToBatch(ushort head, uint written) => AddUsed(head, written);

    public bool PublishUsed() => _inner.PublishUsed();
    public void DisableNotifications() => _inner.DisableNotifications();
    public bool Polled { get => _inner.Polled; set => _inner.Polled = value; }
    public void SignalNextBatch() => _inner.SignalNextBatch();
    public bool HasAvailable => _resubmitted < _resubmit.Length || _inner.HasAvailable;

    public bool EnableNotifications() =>
        // Requests still to resubmit count as work waiting.
        _inner.EnableNotifications() | _resubmitted < _resubmit.Length;
}
