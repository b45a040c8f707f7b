using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Queues;
using VirtioSharp.Tests.VhostUser;
using Xunit;

namespace VirtioSharp.Tests.Block;

/// <summary>
/// The limits per disk: the token bucket on a timeline the test drives, the bucket shared by
/// threads, and a disk whose one queue floods it while another queue asks for one request.
/// </summary>
public class ThrottleTests
{
    [Theory]
    [InlineData(0.0)]
    [InlineData(-5.0)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void A_rate_that_is_not_positive_and_finite_is_refused(double rate)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TokenBucket(rate));
        Assert.Contains("rate must be positive", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(1000, 10, 1.0)]
    [InlineData(1000, 0, 2.0)] // burst 0: a tenth of a second of the rate
    [InlineData(200, 1, 3.0)] // a burst shorter than the timer's 5 ms is raised to it
    [InlineData(8 << 20, 64 << 10, 0.5)]
    public void A_greedy_taker_gets_rate_times_time_plus_the_burst_and_no_more(double rate, double burst, double seconds)
    {
        var bucket = new TokenBucket(rate, burst);
        var effectiveBurst = Math.Max(burst == 0 ? rate / 10 : burst, rate * TokenBucket.MinBurstSeconds);
        Assert.Equal(effectiveBurst, bucket.Burst);
        var unit = rate > 1e6 ? 4096.0 : 1.0; // bytes move in 4 KiB requests
        var start = Stopwatch.GetTimestamp();
        var end = start + (long)(seconds * Stopwatch.Frequency);
        var step = Math.Max(1, Stopwatch.Frequency / 100_000); // looks every 10 us of the timeline
        double taken = 0;
        long waits = 0;
        for (var now = start; now <= end; now += step)
        {
            var wait = bucket.WaitTicks(now);
            if (wait > 0)
            {
                waits++;
                now += wait - step; // sleeps until the debt is paid, as a worker's timer does
                continue;
            }
            bucket.Take(unit, now);
            taken += unit;
        }
        var allowed = rate * seconds + effectiveBurst;
        // The request that empties the bucket goes whole, so at most one unit over.
        Assert.InRange(taken, allowed - 2 * unit - rate * 2e-5, allowed + unit);
        Assert.True(waits > 0, "a greedy taker must have waited");
    }

    [Fact]
    public void Threads_sharing_a_bucket_lose_no_charge()
    {
        const double rate = 1000;
        var bucket = new TokenBucket(rate, burst: 1);
        var now = Stopwatch.GetTimestamp();
        const int perThread = 200_000;
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            for (var i = 0; i < perThread; i++)
                bucket.Take(1, now);
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        // Every unit taken pushed the full time on by 1/rate: the debt is all of them, less the
        // burst the bucket held (the minimum burst, 5 ms of the rate).
        var expectedSeconds = (4.0 * perThread - bucket.Burst) / rate;
        var waitSeconds = (double)bucket.WaitTicks(now) / Stopwatch.Frequency;
        Assert.InRange(waitSeconds, expectedSeconds - 0.001, expectedSeconds + 0.001);
    }

    /// <summary>
    /// Queue 0 makes 80 reads available at once on a disk limited to 100 requests a second; a
    /// moment later queue 1 asks for one. The flood is delayed, never failed, and held to the
    /// limit; queue 1's request shares the limit but does not wait behind the flood, and each
    /// queue keeps its own throttled-time account. Once queue 1 has nothing more to do, the flood
    /// neither wakes its worker nor counts against it.
    /// </summary>
    [Fact]
    public void A_queue_that_floods_a_limited_disk_is_delayed_and_the_other_queue_is_not_queued_behind_it()
    {
        const double limit = 100;
        const int flood = 80; // three descriptors each: nearly the whole ring
        using var server = new TestServer(numQueues: 2, limits: new BlkLimits { IopsTotal = limit });
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q0 = fe.SetupQueue(0, size: 256);
        var q1 = fe.SetupQueue(1, size: 64);
        var data = new byte[512];
        var idle = server.Server.Pollers[1];
        var throttle = server.Device.Throttle!;
        var started = Stopwatch.GetTimestamp();
        for (var i = 0; i < flood; i++)
            q0.Submit(BlkRequestType.In, 0, data);
        var done0 = 0;
        void TakeQueue0()
        {
            while (q0.Driver.TryTakeUsed(out _, out _, out var error))
            {
                Assert.Equal(UsedError.None, error);
                done0++;
            }
        }
        // The burst (10 requests) goes at once; then the queue is held to the rate: 20 more
        // requests take 200 ms, 20 times the disk is in debt and then not.
        var deadline = Environment.TickCount64 + TestFrontEnd.Timeout;
        while (done0 < 30)
        {
            Assert.True(Environment.TickCount64 < deadline, $"only {done0} of the flood came back");
            TakeQueue0();
            Thread.Sleep(1);
        }
        var head = q1.Submit(BlkRequestType.In, 8, data);
        var asked = Stopwatch.GetTimestamp();
        q1.WaitUsed(head);
        var answered = Stopwatch.GetTimestamp();
        TakeQueue0();
        var behind = flood - done0;
        Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(q1.Status, 1)[0]);
        // Behind the flood it would have waited for all of it (about 50 requests, half a second).
        Assert.True(behind > flood / 3, $"queue 1's request came back only after the flood: {behind} of queue 0's requests were left, {(answered - asked) * 1000 / Stopwatch.Frequency} ms");

        // Queue 1 is empty again while the flood keeps the disk in debt: 20 more of queue 0's
        // requests (200 ms) must not wake its worker each time, nor add to its account. (A
        // wake-up or two may come from the call watchdog's timer.)
        var sleepsBefore = idle.Sleeps;
        var accountBefore = throttle.ThrottledSeconds(1);
        var until = done0 + 20;
        while (done0 < until)
        {
            Assert.True(Environment.TickCount64 < deadline, $"only {done0} of the flood came back");
            TakeQueue0();
            Thread.Sleep(1);
        }
        Assert.True(idle.Sleeps - sleepsBefore <= 2, $"queue 1, with nothing available, slept {idle.Sleeps - sleepsBefore} times while queue 0 took 20 requests");
        Assert.Equal(accountBefore, throttle.ThrottledSeconds(1));

        while (done0 < flood)
        {
            Assert.True(Environment.TickCount64 < deadline, $"only {done0} of the flood came back");
            if (q0.Call.Wait(50))
                q0.Call.TryRead(out _);
            TakeQueue0();
        }
        var seconds = (double)(Stopwatch.GetTimestamp() - started) / Stopwatch.Frequency;
        var burst = limit * 0.1;
        // flood + 1 requests, of which the burst went at once: held to the limit (5 % slack for
        // the timer's lateness is on the slow side only).
        Assert.True(seconds >= (flood + 1 - burst - 1) / limit, $"the flood took only {seconds:0.000} s");
        Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(q0.Status, 1)[0]);
        Assert.True(throttle.ThrottledSeconds(0) > 0.3, $"queue 0 waited {throttle.ThrottledSeconds(0):0.000} s");
        Assert.True(throttle.ThrottledSeconds(1) < throttle.ThrottledSeconds(0) / 3,
            $"queue 1's account ({throttle.ThrottledSeconds(1):0.000} s) holds queue 0's waits ({throttle.ThrottledSeconds(0):0.000} s)");
    }
}
