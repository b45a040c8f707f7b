using VirtioSharp.Block;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Backend;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A driver that never hears an interrupt it asked for waits for ever. The back-end sends the call
/// again while the driver's event index (2.7.10 used_event, 2.8.10 Driver Event Suppression) still
/// names used buffers, and stays quiet once the driver has caught up.
/// </summary>
public class CallWatchdogTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_lost_interrupt_is_sent_again_while_the_driver_still_waits_and_not_once_it_caught_up(bool packed)
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate(packed: packed);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, eventIdx: true, packed: packed);
        var data = new byte[4096];
        // One request through, so the call the worker sends when the ring starts is behind us.
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 8, data));
        q.Call.TryRead(out _);
        Assert.False(q.Driver.EnableInterrupts());
        var watchdog = server.Server.Watchdogs[0];
        var resentBefore = watchdog.Resent;

        var head = q.Submit(BlkRequestType.In, 8, data);
        Assert.True(q.Call.Wait(TestFrontEnd.Timeout), "the first interrupt never came");
        q.Call.TryRead(out _); // lost on its way: the driver looks at nothing

        Assert.True(q.Call.Wait(TestFrontEnd.Timeout), "the interrupt was not sent again while the driver waited");
        q.Call.TryRead(out _);
        Assert.True(q.Driver.TryTakeUsed(out var used, out _, out var error));
        Assert.Equal(head, used);
        Assert.Equal(UsedError.None, error);
        Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(q.Status, 1)[0]);
        TestServer.Eventually(() => watchdog.Resent > resentBefore, "the watchdog counting what it sent again");

        // Caught up (event index at the next used position): nothing more to send, for many
        // times the watchdog's first delay.
        Assert.False(q.Driver.EnableInterrupts());
        var resentAfter = watchdog.Resent;
        Assert.False(q.Call.Wait(30 * CallWatchdog.FirstDelayMs), "an interrupt was sent to a driver that waits for nothing");
        Assert.Equal(resentAfter, watchdog.Resent);
    }
}
