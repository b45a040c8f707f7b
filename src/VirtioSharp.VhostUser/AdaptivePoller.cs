using System.Diagnostics;
using System.Runtime.InteropServices;

namespace VirtioSharp.VhostUser;

/// <summary>
/// How long a thread keeps looking for work before it sleeps, adapted as QEMU's event loop does
/// (poll-max-ns, poll-grow, poll-shrink): a wake-up that came later than the most it may poll
/// halves the window (to nothing below a microsecond); one that came sooner than that but after
/// the window ended doubles it (from 1 us), up to the most. One thread uses it; its counters
/// may be read from any thread. Its state sits alone on its cache lines: the pollers of a
/// device's queues are made together, and one queue's thread must not slow another's.
/// </summary>
public sealed class AdaptivePoller
{
    private static readonly long MicrosecondTicks = Math.Max(1, Stopwatch.Frequency / 1_000_000);
    private readonly long _maxTicks;
    private State _s;

    /// <summary>The written fields, with a cache line of padding before and after them.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct State
    {
        [FieldOffset(64)] public long Window;
        [FieldOffset(72)] public long Start;
        [FieldOffset(80)] public long Windows;
        [FieldOffset(88)] public long Hits;
        [FieldOffset(96)] public long Sleeps;
        [FieldOffset(104)] public bool Begun;
    }

    /// <param name="maxMicroseconds">The most a window lasts; 0 turns polling off.</param>
    public AdaptivePoller(int maxMicroseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMicroseconds);
        MaxMicroseconds = maxMicroseconds;
        _maxTicks = maxMicroseconds * Stopwatch.Frequency / 1_000_000;
        _s.Window = _maxTicks;
    }

    public int MaxMicroseconds { get; }
    public bool Enabled => _maxTicks > 0;
    /// <summary>The current window, in microseconds.</summary>
    public double WindowMicroseconds => Volatile.Read(ref _s.Window) * 1e6 / Stopwatch.Frequency;
    /// <summary>Windows polled.</summary>
    public long Windows => Volatile.Read(ref _s.Windows);
    /// <summary>Windows that found work before they ended.</summary>
    public long Hits => Volatile.Read(ref _s.Hits);
    /// <summary>Times the thread went to sleep (polling found nothing, or was off).</summary>
    public long Sleeps => Volatile.Read(ref _s.Sleeps);

    /// <summary>Starts looking for work; returns the timestamp to look until (no later than now when the window is empty).</summary>
    public long Begin()
    {
        _s.Start = Stopwatch.GetTimestamp();
        _s.Begun = true;
        if (_s.Window > 0)
            Volatile.Write(ref _s.Windows, _s.Windows + 1);
        return _s.Start + _s.Window;
    }

    /// <summary>The window found work.</summary>
    public void Hit()
    {
        Volatile.Write(ref _s.Hits, _s.Hits + 1);
        Adjust(Stopwatch.GetTimestamp() - _s.Start);
    }

    /// <summary>The thread is going to sleep.</summary>
    public void Sleeping() => Volatile.Write(ref _s.Sleeps, _s.Sleeps + 1);

    /// <summary>The thread woke from the sleep that followed <see cref="Begin"/>.</summary>
    public void Woke() => Adjust(Stopwatch.GetTimestamp() - _s.Start);

    private void Adjust(long waited)
    {
        if (!_s.Begun)
            return; // a sleep that did not follow a window (a rate limit's timer)
        _s.Begun = false;
        if (_maxTicks == 0 || waited <= _s.Window)
            return; // the window was long enough
        long next;
        if (waited > _maxTicks)
            next = _s.Window / 2 < MicrosecondTicks ? 0 : _s.Window / 2; // polling longer would not have helped
        else
            next = Math.Min(_maxTicks, _s.Window == 0 ? MicrosecondTicks : _s.Window * 2); // a bit longer would have
        Volatile.Write(ref _s.Window, next);
    }
}
