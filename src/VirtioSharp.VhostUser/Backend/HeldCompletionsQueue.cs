using VirtioSharp.Queues;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// For tests of crash recovery only (<c>vblk serve --debug-hold-completions-ms</c>): keeps each
/// finished request from the used ring for a while, then returns the due ones newest first. A
/// back-end killed at any moment then has requests taken and not returned, finished in an order
/// other than the ring's. It costs a timer per queue; never use it to serve real guests.
/// </summary>
internal sealed class HeldCompletionsQueue : IDeviceQueue, IDisposable
{
    private readonly IDeviceQueue _inner;
    private readonly int _holdMs;
    private readonly Timer _timer;
    private readonly ushort[] _heads;
    private readonly uint[] _written;
    private readonly long[] _due;
    private int _count;

    /// <param name="wake">Makes the queue's worker drain again (it then calls <see cref="PublishUsed"/>).</param>
    public HeldCompletionsQueue(IDeviceQueue inner, int holdMs, Action wake)
    {
        _inner = inner;
        _holdMs = holdMs;
        _heads = new ushort[inner.Size];
        _written = new uint[inner.Size];
        _due = new long[inner.Size];
        _timer = new Timer(_ => wake());
    }

    public IDeviceQueue Inner => _inner;
    public VirtqueueFormat Format => _inner.Format;
    public int Index => _inner.Index;
    public ushort Size => _inner.Size;
    public bool EventIdx => _inner.EventIdx;
    public RingError LastRingError => _inner.LastRingError;
    public int LastRingErrorValue => _inner.LastRingErrorValue;
    public ushort LastAvailIndex => _inner.LastAvailIndex;
    public int InFlight => _inner.InFlight;
    public string DescribeRing() => _inner.DescribeRing();
    public bool DriverAwaitsUsed(out uint position) => _inner.DriverAwaitsUsed(out position);
    public int Held => _count;

    public PopResult TryPop(out DescriptorChain chain) => _inner.TryPop(out chain);

    public void AddUsed(ushort head, uint written)
    {
        if (_count == _heads.Length)
            Release(all: true); // cannot happen with distinct heads; never drop one
        _heads[_count] = head;
        _written[_count] = written;
        _due[_count] = Environment.TickCount64 + _holdMs;
        if (++_count == 1)
            _timer.Change(_holdMs, Timeout.Infinite);
    }

    public bool PublishUsed()
    {
        Release(all: false);
        return _inner.PublishUsed();
    }

    /// <summary>Returns every held request (the ring is stopping).</summary>
    public void ReleaseAll() => Release(all: true);

    private void Release(bool all)
    {
        var now = Environment.TickCount64;
        var due = 0;
        while (due < _count && (all || _due[due] <= now))
            due++;
        for (var i = due - 1; i >= 0; i--) // newest first: out of the order they were taken
            _inner.AddUsed(_heads[i], _written[i]);
        var left = _count - due;
        Array.Copy(_heads, due, _heads, 0, left);
        Array.Copy(_written, due, _written, 0, left);
        Array.Copy(_due, due, _due, 0, left);
        _count = left;
        if (left > 0)
            _timer.Change(Math.Max(1, _due[0] - now), Timeout.Infinite);
    }

    public void DisableNotifications() => _inner.DisableNotifications();
    public bool Polled { get => _inner.Polled; set => _inner.Polled = value; }
    public void SignalNextBatch() => _inner.SignalNextBatch();
    public bool HasAvailable => _inner.HasAvailable;
    public bool EnableNotifications() => _inner.EnableNotifications();

    public void Dispose() => _timer.Dispose();
}
