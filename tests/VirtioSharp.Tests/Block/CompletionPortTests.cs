using System.Collections.Concurrent;
using VirtioSharp.Devices;

namespace VirtioSharp.Tests.Block;

/// <summary>
/// The port through which a storage client's threads hand finished operations to a queue's
/// worker: every post is taken exactly once, none is lost between a post and a wake-up, and a
/// tag that cannot be in flight is refused.
/// </summary>
public sealed class CompletionPortTests
{
    [Fact]
    public async Task Posts_from_many_threads_at_once_are_each_taken_exactly_once_by_the_worker()
    {
        const int tags = 4096;
        using var woken = new SemaphoreSlim(0);
        using var port = new CompletionPort(tags, () => woken.Release());
        var seen = new int[tags];
        var results = new int[tags];
        var taken = 0;
        var worker = Task.Run(async () =>
        {
            // The worker sleeps until woken and takes whatever is there, as a queue worker does.
            while (Volatile.Read(ref taken) < tags)
            {
                Assert.True(await woken.WaitAsync(10_000), $"no wake-up after {taken} completions: one was lost");
                taken += port.Drain((seen, results), static (s, tag, result) =>
                {
                    s.seen[tag]++;
                    s.results[tag] = result;
                });
            }
        });
        Parallel.For(0, tags, new ParallelOptions { MaxDegreeOfParallelism = 8 }, tag => Assert.True(port.Post(tag, tag * 3 - 100)));
        await worker.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.All(seen, n => Assert.Equal(1, n));
        Assert.Equal(Enumerable.Range(0, tags).Select(t => t * 3 - 100), results);
        Assert.False(port.HasPosted);
        Assert.Equal(0, port.Stray);
    }

    [Fact]
    public void Only_the_post_that_finds_the_port_empty_wakes_the_worker()
    {
        var wakes = 0;
        using var port = new CompletionPort(8, () => wakes++);
        port.Post(1, 0);
        port.Post(2, 0);
        port.Post(3, 0);
        Assert.Equal(1, wakes);
        var order = new List<ushort>();
        Assert.Equal(3, port.Drain(order, static (o, tag, _) => o.Add(tag)));
        Assert.Equal(new ushort[] { 1, 2, 3 }, order.Order());
        port.Post(1, 0); // the same tag again, after the worker took it: a new operation
        Assert.Equal(2, wakes);
    }

    [Fact]
    public void A_tag_out_of_range_or_posted_twice_before_it_was_taken_is_refused_and_counted()
    {
        using var port = new CompletionPort(4, () => { });
        Assert.False(port.Post(4, 0));
        Assert.False(port.Post(-1, 0));
        Assert.True(port.Post(2, 7));
        Assert.False(port.Post(2, 9)); // a backend that completes twice
        var results = new ConcurrentBag<(ushort, int)>();
        Assert.Equal(1, port.Drain(results, static (r, tag, result) => r.Add((tag, result))));
        Assert.Equal((2, 7), Assert.Single(results));
        Assert.Equal(3, port.Stray);
    }

    [Fact]
    public void A_native_cookie_names_the_port_and_tag_for_a_C_callback()
    {
        using var port = new CompletionPort(16, () => { });
        var cookie = port.NativeCookie(9);
        var t = new Thread(() => Assert.True(CompletionPort.PostCookie(cookie, -110)));
        t.Start();
        t.Join();
        (ushort Tag, int Result) got = default;
        port.Drain(0, (_, tag, result) => got = (tag, result));
        Assert.Equal(((ushort)9, -110), got);
        Assert.Throws<ArgumentOutOfRangeException>(() => port.NativeCookie(16));
    }
}
