using System.Diagnostics;

namespace VirtioSharp.VhostUser;

/// <summary>
/// How long a thread keeps looking for work before it sleeps, adapted as QEMU's event loop does
/// (poll-max-ns, poll-grow, poll-shrink): a wake-up that came later than the most it may poll
/// halves the window (to nothing below a microsecond); one that came sooner than that but after
/// the window ended doubles it (from 1 us), up to the most. One thread uses it; its counters
/// may be read from any thread.
/// </summary>
public sealed class AdaptivePoller
{
    private static readonly long MicrosecondTicks = Math.Max(1, Stopwatch.Frequency / 1_000_000);
    private readonly long _maxTicks;
    private long _window;
    private long _start;
    private bool _begun;
    private long _windows, _hits, _sleeps;

    /// <param name="maxMicroseconds">The most a window lasts; 0 turns polling off.</param>
    public AdaptivePoller(int maxMicroseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMicroseconds);
        MaxMicroseconds = maxMicroseconds;
        _maxTicks = maxMicroseconds * Stopwatch.Frequency / 1_000_000;
        _window = _maxTicks;
    }

    public int MaxMicroseconds { get; }
    public bool Enabled => _maxTicks > 0;
    /// <summary>The current window, in microseconds.</summary>
    public double WindowMicroseconds => Volatile.Read(ref _window) * 1e6 / Stopwatch.Frequency;
    /// <summary>Windows polled.</summary>
    public long Windows => Volatile.Read(ref _windows);
    /// <summary>Windows that found work before they ended.</summary>
    public long Hits => Volatile.Read(ref _hits);
    /// <summary>Times the thread went to sleep (polling found nothing, or was off).</summary>
    public long Sleeps => Volatile.Read(ref _sleeps);

    /// <summary>Starts looking for work; returns the timestamp to look until (no later than now when the window is empty).</summary>
    public long Begin()
    {
        _start = Stopwatch.GetTimestamp();
        _begun = true;
        if (_window > 0)
            Volatile.Write(ref _windows, _windows + 1);
        return _start + _window;
    }

    /// <summary>The window found work.</summary>
    public void Hit()
    {
        Volatile.Write(ref _hits, _hits + 1);
        Adjust(Stopwatch.GetTimestamp() - _start);
    }

    /// <summary>The thread is going to sleep.</summary>
    public void Sleeping() => Volatile.Write(ref _sleeps, _sleeps + 1);

    /// <summary>The thread woke from the sleep that followed <see cref="Begin"/>.</summary>
    public void Woke() => Adjust(Stopwatch.GetTimestamp() - _start);

    private void Adjust(long waited)
    {
        if (!_begun)
            return; // a sleep that did not follow a window (a rate limit's timer)
        _begun = false;
        if (_maxTicks == 0 || waited <= _window)
            return; // the window was long enough
        long next;
        if (waited > _maxTicks)
            next = _window / 2 < MicrosecondTicks ? 0 : _window / 2; // polling longer would not have helped
        else
            next = Math.Min(_maxTicks, _window == 0 ? MicrosecondTicks : _window * 2); // a bit longer would have
        Volatile.Write(ref _window, next);
    }
}
