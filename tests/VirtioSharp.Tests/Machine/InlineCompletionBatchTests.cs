using System.Collections.Concurrent;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Machine;

/// <summary>
/// With inline completions, callers that submit again from their continuation do so inside the
/// driver's reap of the used ring. Those requests go out together when the reap's pass ends: one
/// move of the available index (2.7.13.3) and one notification (2.7.13.4) for the whole batch,
/// instead of a move per request with the device woken by the first while the rest are placed.
/// </summary>
public sealed class InlineCompletionBatchTests
{
    /// <summary>Keeps the driver's moves of the available index.</summary>
    private sealed class AvailMoves : ITraceSink
    {
        public readonly ConcurrentQueue<(ulong From, ulong To)> Moves = new();
        public bool Active => true;
        public void Step(string actor, string text) { }
        public void Event(RingEvent e)
        {
            if (e.Kind == RingEventKind.AvailIndex)
                Moves.Enqueue((e.OldValue, e.Value));
        }
    }

    [Fact]
    public async Task Requests_submitted_from_inline_continuations_are_published_once_per_reap_with_one_notification()
    {
        const int Depth = 8;
        var trace = new AvailMoves();
        using var rig = new MachineRig(new MemoryBackend(1 << 20), queueSize: 16,
            driver: new BlkDriverOptions { InlineCompletions = true, Trace = trace });
        var kicks = 0;
        // The test plays the device's I/O thread: a notification is only counted, and the queue is
        // drained when the test says so.
        rig.Machine.Device.QueueNotified = _ => Interlocked.Increment(ref kicks);
        var firstDone = 0;
        async Task Worker(int i)
        {
            var buffer = new byte[512];
            await rig.Driver.ReadAsync((ulong)i * 512, buffer).ConfigureAwait(false);
            Interlocked.Increment(ref firstDone);
            // Runs on the driver's interrupt thread, inside its reap: the second request is placed there.
            await rig.Driver.ReadAsync((ulong)(Depth + i) * 512, buffer).ConfigureAwait(false);
            await Task.Yield(); // leave the interrupt thread: what awaits this worker may dispose the machine
        }
        // Started one after another on a thread without a synchronization context: each call returns
        // once its first request is placed and awaited, so every continuation is in place before
        // the device uses anything.
        var workers = await Task.Run(() => Enumerable.Range(0, Depth).Select(Worker).ToArray());
        Assert.Equal(Depth, rig.Driver.Outstanding);
        Assert.Equal(Depth, (int)trace.Moves.Sum(m => (long)(ushort)(m.To - m.From)));
        var movesBefore = trace.Moves.Count;
        var kicksBefore = Volatile.Read(ref kicks);

        rig.Machine.Device.ProcessQueue(0); // uses all eight and interrupts; their continuations submit eight more
        await WaitUntil(() => Volatile.Read(ref firstDone) == Depth && rig.Driver.Outstanding == Depth && trace.Moves.Count > movesBefore,
            "the continuations did not submit their second requests");

        var after = trace.Moves.Skip(movesBefore).ToArray();
        Assert.True(after.SequenceEqual([((ulong)Depth, (ulong)(2 * Depth))]),
            $"available index moves after the reap: {string.Join(", ", after.Select(m => $"{m.From}->{m.To}"))}; before it: {string.Join(", ", trace.Moves.Take(movesBefore).Select(m => $"{m.From}->{m.To}"))}");
        Assert.Equal(kicksBefore + 1, Volatile.Read(ref kicks)); // the device asked for one (avail_event at 8) and got one

        rig.Machine.Device.ProcessQueue(0);
        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(30));
        rig.AssertHealthy();
    }

    private static async Task WaitUntil(Func<bool> condition, string failure)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, failure);
            await Task.Delay(5);
        }
    }
}
