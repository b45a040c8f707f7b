using System.Diagnostics;

namespace VirtioSharp.Block;

/// <summary>
/// A token bucket kept as one number, the time at which the bucket would be full again (the
/// theoretical arrival time of the generic cell rate algorithm). A request may start while the
/// bucket is not in debt, that is while that time lies at most one burst ahead of now; it then
/// pushes the time on by its cost over the rate. Requests are never split and never refused:
/// the one that empties the bucket goes, and the next waits until the debt is paid, so over any
/// long run at most rate x time + burst units pass. Lock-free: queues sharing a bucket update it
/// with compare-and-swap, and one that only checks reads it once.
/// </summary>
public sealed class TokenBucket
{
    /// <summary>The burst is never shorter than this many seconds of the rate: a worker's timer cannot wake sooner, and a shorter bucket would lose rate to wake-up lateness.</summary>
    public const double MinBurstSeconds = 0.005;

    private readonly double _ticksPerUnit;
    private readonly double _tolerance; // ticks the full time may run ahead of now
    private readonly long _origin = Stopwatch.GetTimestamp();
    private double _full; // ticks since _origin at which the bucket is full again

    /// <param name="rate">Units (requests or bytes) per second, positive.</param>
    /// <param name="burst">Units that may pass at once on top of the rate; 0 picks a tenth of a second of the rate.</param>
    public TokenBucket(double rate, double burst = 0)
    {
        if (!(rate > 0) || double.IsInfinity(rate))
            throw new ArgumentOutOfRangeException(nameof(rate), $"a rate must be positive, not {rate}");
        if (!(burst >= 0) || double.IsInfinity(burst))
            throw new ArgumentOutOfRangeException(nameof(burst), $"a burst must be zero or positive, not {burst}");
        Rate = rate;
        Burst = Math.Max(burst == 0 ? rate / 10 : burst, rate * MinBurstSeconds);
        _ticksPerUnit = Stopwatch.Frequency / rate;
        _tolerance = Burst * _ticksPerUnit;
    }

    public double Rate { get; }
    public double Burst { get; }

    private double Now(long timestamp) => timestamp - _origin;

    /// <summary>Stopwatch ticks until a request may start (0: now).</summary>
    public long WaitTicks(long timestamp)
    {
        var ahead = Volatile.Read(ref _full) - _tolerance - Now(timestamp);
        return ahead > 0 ? (long)Math.Ceiling(ahead) : 0;
    }

    /// <summary>Takes <paramref name="units"/> from the bucket (it may go into debt).</summary>
    public void Take(double units, long timestamp)
    {
        var now = Now(timestamp);
        var cost = units * _ticksPerUnit;
        var seen = Volatile.Read(ref _full);
        while (true)
        {
            var next = Math.Max(seen, now) + cost;
            var found = Interlocked.CompareExchange(ref _full, next, seen);
            if (found == seen) // a NaN never gets here: rate and units are finite
                return;
            seen = found;
        }
    }
}
