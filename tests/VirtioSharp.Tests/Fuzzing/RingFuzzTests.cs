using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using VirtioSharp.Block;
using Xunit.Abstractions;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>
/// The device half against random and mutated rings (see <see cref="RingFuzzer"/>): a fixed seed
/// and at least 100,000 cases in CI; VBLK_FUZZ_CASES raises the count, VBLK_FUZZ_SEED changes the seed.
/// </summary>
public sealed class RingFuzzTests(ITestOutputHelper output)
{
    private const int Chunk = 2_000;

    [Fact]
    public void Random_and_mutated_rings_never_break_the_device()
    {
        var seed = FuzzSettings.Seed;
        var cases = FuzzSettings.RingCases;
        using var fuzzer = new RingFuzzer(seed);
        var gen = RingCaseGen.Case(RingFuzzer.Layouts, fuzzer.TargetCount);
        var clock = Stopwatch.StartNew();
        for (var done = 0; done < cases; done += Chunk)
        {
            var n = Math.Min(Chunk, cases - done);
            var batch = Gen.Sample(gen, numberOfSamples: n, seed: new Rnd(seed + (ulong)done, 0x9E3779B97F4A7C15UL), size: 50);
            var i = done;
            foreach (var c in batch)
                fuzzer.Run(c with { Index = i++ });
        }
        clock.Stop();

        var s = fuzzer.Stats;
        output.WriteLine($"seed 0x{seed:x}: {s} in {clock.Elapsed.TotalSeconds:0.0} s");
        output.WriteLine($"mutations applied: {string.Join(", ", s.MutationsApplied.OrderBy(m => m.Key).Select(m => $"{m.Key} {m.Value}"))}");
        foreach (var (name, st) in fuzzer.TargetStats)
            output.WriteLine($"  {name}: {st.Total} requests, {st.IoErrors} IOERR, {st.Unsupported} UNSUPP, {st.Malformed} malformed, {st.BytesRead} bytes read, {st.BytesWritten} written, {st.AsyncCompleted} completed asynchronously");

        // The fuzzer reached what it is meant to reach, not only the first check.
        Assert.Equal(cases, s.Cases);
        Assert.True(s.ChainsTaken > cases, $"only {s.ChainsTaken} chains taken");
        Assert.True(s.WriteChecks > cases / 4, $"only {s.WriteChecks} write checks");
        foreach (var outcome in Enum.GetValues<Devices.QueueOutcome>())
            Assert.True(s.Outcomes.GetValueOrDefault(outcome) > 0, $"no drain ended with {outcome}");
        var served = fuzzer.TargetStats.Sum(t => t.Stats.Total - t.Stats.IoErrors - t.Stats.Unsupported);
        Assert.True(served > cases / 10, $"only {served} requests served OK");
        foreach (var type in new[] { BlkRequestType.In, BlkRequestType.Out, BlkRequestType.Flush, BlkRequestType.GetId, BlkRequestType.Discard, BlkRequestType.WriteZeroes })
            Assert.True(fuzzer.TargetStats.Sum(t => t.Stats.Requests(type)) > 100, $"few {type} requests reached the device");
        var async = fuzzer.TargetStats.Sum(t => t.Stats.AsyncCompleted);
        Assert.True(async > 100, $"only {async} requests went through asynchronous I/O");
        foreach (var section in new[] { "2.7.4.2", "2.7.5", "2.7.5.2", "2.7.5.3.1", "2.7.6", "2.7.6.1", "2.7.13.3", "5.2.6", "5.2.6.1", "5.2.6.2" })
            Assert.True(s.BreachesBySection.GetValueOrDefault(section) > 0, $"the fuzzer never reached a breach of {section}");
    }
}
