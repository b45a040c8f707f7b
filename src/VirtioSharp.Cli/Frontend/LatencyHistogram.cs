using System.Numerics;

namespace VirtioSharp.Cli.Frontend;

/// <summary>
/// Latencies in a log-linear histogram (each power of two split into 32 buckets, so a reported
/// percentile is within about 3% of the true value). Fixed size, so recording allocates nothing;
/// one per worker, merged at the end.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 5;
    private const int SubBuckets = 1 << SubBits;
    private const int Exponents = 64 - SubBits + 1;
    private readonly long[] _counts = new long[Exponents * SubBuckets];

    public long Count { get; private set; }
    public long Max { get; private set; }
    public double Sum { get; private set; }

    /// <summary>Records one latency in nanoseconds.</summary>
    public void Record(long nanoseconds)
    {
        var v = (ulong)Math.Max(0, nanoseconds);
        _counts[Index(v)]++;
        Count++;
        Sum += v;
        if ((long)v > Max)
            Max = (long)v;
    }

    private static int Index(ulong v)
    {
        if (v < SubBuckets)
            return (int)v;
        // Keep the top SubBits+1 bits: they lie in [SubBuckets, 2*SubBuckets).
        var shift = 63 - BitOperations.LeadingZeroCount(v) - SubBits;
        var top = (int)(v >> shift);
        return (shift + 1) * SubBuckets + (top - SubBuckets);
    }

    /// <summary>The middle of a bucket's range, in nanoseconds.</summary>
    private static double Value(int index)
    {
        var exponent = index / SubBuckets;
        var sub = index % SubBuckets;
        if (exponent == 0)
            return sub;
        var low = (ulong)(sub + SubBuckets) << (exponent - 1);
        var width = 1UL << (exponent - 1);
        return low + width / 2.0;
    }

    public void Clear()
    {
        Array.Clear(_counts);
        Count = 0;
        Max = 0;
        Sum = 0;
    }

    public void Add(LatencyHistogram other)
    {
        for (var i = 0; i < _counts.Length; i++)
            _counts[i] += other._counts[i];
        Count += other.Count;
        Sum += other.Sum;
        Max = Math.Max(Max, other.Max);
    }

    /// <summary>The latency (ns) below which <paramref name="percentile"/> percent of the samples lie.</summary>
    public double Percentile(double percentile)
    {
        if (Count == 0)
            return 0;
        var rank = (long)Math.Ceiling(percentile / 100.0 * Count);
        rank = Math.Clamp(rank, 1, Count);
        long seen = 0;
        for (var i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
                return Math.Min(Value(i), Max);
        }
        return Max;
    }

    public double Mean => Count == 0 ? 0 : Sum / Count;
}
