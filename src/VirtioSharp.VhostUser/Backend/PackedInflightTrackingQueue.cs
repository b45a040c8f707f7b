using VirtioSharp.Queues;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// A packed device queue that keeps its <see cref="PackedInflightRecord"/> as lists are taken and
/// returned, and hands out the lists a previous back-end left in flight (from the record's copies
/// of their descriptors) before any new one. It wraps the queue, so the device and the ring code
/// know nothing of it. Per request it adds stores into the shared area: no allocation, no system call.
/// </summary>
internal sealed class PackedInflightTrackingQueue : IDeviceQueue
{
    private readonly PackedDeviceQueue _inner;
    private readonly PackedInflightRecord _record;
    private readonly PackedInflightRecord.Pending[] _resubmit;
    private readonly ushort[] _entryOfToken; // the record's first entry of each chain in flight, by the queue's token
    private int _resubmitted;
    private ulong _counter;

    public PackedInflightTrackingQueue(PackedDeviceQueue inner, PackedInflightRecord record, in PackedInflightRecord.Plan plan)
    {
        _inner = inner;
        _record = record;
        _resubmit = plan.Resubmit;
        _counter = plan.NextCounter;
        _entryOfToken = new ushort[inner.Size];
        _entryOfToken.AsSpan().Fill(record.DescNum);
        inner.CaptureLists();
    }

    public PackedDeviceQueue Inner => _inner;
    public int Index => _inner.Index;
    public ushort Size => _inner.Size;
    public VirtqueueFormat Format => VirtqueueFormat.Packed;
    public bool EventIdx => _inner.EventIdx;
    public RingError LastRingError => _inner.LastRingError;
    public int LastRingErrorValue => _inner.LastRingErrorValue;
    public ushort LastAvailIndex => _inner.LastAvailIndex;
    public ushort UsedIndex => _inner.UsedIndex;
    public int InFlight => _inner.InFlight;
    public string DescribeRing() => _inner.DescribeRing();
    public bool DriverAwaitsUsed(out uint position) => _inner.DriverAwaitsUsed(out position);
    public bool Polled { get => _inner.Polled; set => _inner.Polled = value; }
    /// <summary>Lists from the previous back-end not handed out yet.</summary>
    public int ResubmitPending => _resubmit.Length - _resubmitted;

    public PopResult TryPop(out DescriptorChain chain)
    {
        if (_resubmitted < _resubmit.Length)
        {
            // vhost-user.rst, reconnecting: resubmit what was in flight, in counter order, first.
            // Its entries stay as the last back-end recorded them (in flight, same counter).
            var r = _resubmit[_resubmitted++];
            var again = _inner.TryTakeRecorded(r.Descriptors, out chain);
            if (again == PopResult.Chain)
                _entryOfToken[chain.Head] = r.Entry;
            return again;
        }
        var result = _inner.TryPop(out chain);
        if (result == PopResult.Chain)
            _entryOfToken[chain.Head] = _record.Take(_inner.LastList, _counter++);
        return result;
    }

    public void AddUsed(ushort head, uint written)
    {
        var entry = _inner.IsInFlight(head) ? _entryOfToken[head] : _record.DescNum;
        if (entry >= _record.DescNum)
        {
            _inner.AddUsed(head, written);
            return;
        }
        _entryOfToken[head] = _record.DescNum;
        _record.BeginUsed(entry);       // entries back on the free list, used_idx and its wrap counter move
        _inner.AddUsed(head, written);  // the used descriptor, flags last
        _record.EndUsed(entry);         // inflight = 0; old_free_head, old_used_idx, old_used_wrap_counter
    }

    public bool PublishUsed() => _inner.PublishUsed();
    public void DisableNotifications() => _inner.DisableNotifications();
    public void SignalNextBatch() => _inner.SignalNextBatch();
    public bool HasAvailable => _resubmitted < _resubmit.Length || _inner.HasAvailable;

    public bool EnableNotifications() =>
        // Lists still to resubmit count as work waiting.
        _inner.EnableNotifications() | _resubmitted < _resubmit.Length;
}
