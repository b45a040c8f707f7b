using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using VirtioSharp.Block;
using VirtioSharp.Tests.VhostUser;
using Xunit.Abstractions;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>
/// The vhost-user back-end against random and mutated message streams (see <see cref="VhostUserFuzzer"/>):
/// a fixed seed and at least 10,000 streams in CI; VBLK_FUZZ_STREAMS raises the count, VBLK_FUZZ_SEED changes the seed.
/// </summary>
public sealed class VhostUserFuzzTests(ITestOutputHelper output)
{
    private const int Chunk = 500;

    [Fact]
    public void Mutated_message_streams_never_stop_the_back_end()
    {
        var seed = FuzzSettings.Seed;
        var count = FuzzSettings.Streams;
        var fuzzers = VhostUserFuzzer.Modes.Select(m => new VhostUserFuzzer(m)).ToArray();
        try
        {
            foreach (var f in fuzzers)
                f.CheckScripts(); // the recorded sessions are valid as they stand
            var gen = VhostStreamGen.Stream(fuzzers[0].Scripts.Count, fuzzers.Length);
            var streams = new List<VhostStream>(count);
            for (var done = 0; done < count; done += Chunk)
            {
                var i = done;
                streams.AddRange(Gen.Sample(gen, numberOfSamples: Math.Min(Chunk, count - done),
                    seed: new Rnd(seed ^ 0x76686f7374UL + (ulong)done, 0x9E3779B97F4A7C15UL), size: 50).Select(s => s with { Index = i++ }));
            }

            // One server per strict mode, each fed its share of the streams in order, the three side by side.
            var clock = Stopwatch.StartNew();
            Parallel.For(0, fuzzers.Length, new ParallelOptions { MaxDegreeOfParallelism = fuzzers.Length }, k =>
            {
                foreach (var s in streams.Where(s => s.Server == k))
                    fuzzers[k].Run(s);
            });
            clock.Stop();

            foreach (var f in fuzzers)
                f.CheckServerStillServes(RoundTrip);
            output.WriteLine($"seed 0x{seed:x}: {count} streams in {clock.Elapsed.TotalSeconds:0.0} s");
            foreach (var f in fuzzers)
                output.WriteLine("  " + f.Summary());
            Assert.Equal(count, fuzzers.Sum(f => f.Streams) - fuzzers.Sum(f => f.Scripts.Count));
            // The streams went deep: requests were served, and both ways of refusing a message were taken.
            foreach (var f in fuzzers)
            {
                var (requests, refusals, closes) = f.Reached;
                Assert.True(requests > count / 30, $"only {requests} requests served");
                Assert.True(refusals > count / 30, $"only {refusals} messages refused");
                Assert.True(closes > count / 30, $"only {closes} connections closed for a broken message");
            }
        }
        finally
        {
            foreach (var f in fuzzers)
                f.Dispose();
        }
    }

    /// <summary>A valid session from the raw test front-end: write a pattern, read it back.</summary>
    private static (BlkStatus, BlkStatus, bool) RoundTrip(string socketPath)
    {
        using var fe = TestFrontEnd.Connect(socketPath);
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0);
        var data = new byte[4096];
        new Random(7).NextBytes(data);
        var write = q.Request(BlkRequestType.Out, 100, data);
        var back = new byte[data.Length];
        var read = q.Request(BlkRequestType.In, 100, back);
        return (write, read, data.AsSpan().SequenceEqual(back));
    }
}
