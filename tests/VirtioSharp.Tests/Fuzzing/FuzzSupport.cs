using System.Diagnostics;
using System.Globalization;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>
/// SplitMix64: a tiny, fast, seedable generator for bulk bytes and picks inside one fuzz case.
/// The cases themselves come from FsCheck generators; each carries the seed this one starts from.
/// </summary>
internal struct SplitMix(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        var z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>0 ≤ result &lt; <paramref name="n"/> (n &gt; 0).</summary>
    public int Below(int n) => (int)(Next() % (ulong)n);
    public ulong Below(ulong n) => Next() % n;
    public bool Chance(int percent) => Below(100) < percent;
    public T Pick<T>(T[] values) => values[Below(values.Length)];

    public void Fill(Span<byte> bytes)
    {
        while (bytes.Length >= 8)
        {
            BitConverter.TryWriteBytes(bytes, Next());
            bytes = bytes[8..];
        }
        for (var i = 0; i < bytes.Length; i++)
            bytes[i] = (byte)Next();
    }
}

/// <summary>Counts and seeds for the fuzz runs: fixed in CI, raised from the environment for longer runs.</summary>
internal static class FuzzSettings
{
    public const int DefaultRingCases = 100_000;
    public const int DefaultStreams = 10_000;
    public const ulong DefaultSeed = 0x5EED_F022;

    /// <summary>VBLK_FUZZ_CASES: ring cases for the device-half fuzzer.</summary>
    public static int RingCases => Read("VBLK_FUZZ_CASES", DefaultRingCases);
    /// <summary>VBLK_FUZZ_STREAMS: message streams for the vhost-user fuzzer.</summary>
    public static int Streams => Read("VBLK_FUZZ_STREAMS", DefaultStreams);

    /// <summary>VBLK_FUZZ_SEED: another seed (decimal or 0x hex) to explore beyond the CI cases.</summary>
    public static ulong Seed
    {
        get
        {
            var s = Environment.GetEnvironmentVariable("VBLK_FUZZ_SEED");
            if (string.IsNullOrWhiteSpace(s))
                return DefaultSeed;
            return s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                ? ulong.Parse(s.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
                : ulong.Parse(s, CultureInfo.InvariantCulture);
        }
    }

    private static int Read(string name, int fallback)
    {
        var s = Environment.GetEnvironmentVariable(name);
        return int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0 ? Math.Max(n, fallback) : fallback;
    }
}

/// <summary>
/// Ends the process with a message when one fuzz step runs far too long: a hang must not leave
/// CI waiting for a job timeout, and a stuck device thread cannot be interrupted from outside.
/// </summary>
internal sealed class Watchdog : IDisposable
{
    private readonly Thread _thread;
    private readonly TimeSpan _limit;
    private readonly ManualResetEventSlim _stop = new();
    private long _armedAt;
    private volatile string _what = "";

    public Watchdog(TimeSpan limit)
    {
        _limit = limit;
        _thread = new Thread(Watch) { IsBackground = true, Name = "fuzz watchdog" };
        _thread.Start();
    }

    /// <summary>Starts timing <paramref name="what"/>; the previous step is done.</summary>
    public void Arm(string what)
    {
        _what = what;
        Volatile.Write(ref _armedAt, Stopwatch.GetTimestamp());
    }

    public void Disarm() => Volatile.Write(ref _armedAt, 0);

    private void Watch()
    {
        while (!_stop.Wait(250))
        {
            var at = Volatile.Read(ref _armedAt);
            if (at != 0 && Stopwatch.GetElapsedTime(at) > _limit)
                Environment.FailFast($"fuzz watchdog: {_what} has run for more than {_limit.TotalSeconds} s (hang)");
        }
    }

    public void Dispose()
    {
        _stop.Set();
        _thread.Join();
        _stop.Dispose();
    }
}
