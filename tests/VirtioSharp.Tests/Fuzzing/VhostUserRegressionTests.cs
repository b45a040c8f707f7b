using VirtioSharp.Block;
using VirtioSharp.Native;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>Back-end bugs the vhost-user fuzzer found, each kept from coming back.</summary>
public sealed class VhostUserRegressionTests
{
    /// <summary>
    /// Found by the fuzzer (a mutated SET_VRING_KICK carried the guest RAM memfd): a regular file
    /// always polls readable, so the ring worker drained in a tight loop and burned a core until the
    /// front-end left. Kick, call and err descriptors must be eventfds; anything else is refused.
    /// </summary>
    [Theory]
    [InlineData(VhostUserRequest.SetVringKick)]
    [InlineData(VhostUserRequest.SetVringCall)]
    [InlineData(VhostUserRequest.SetVringErr)]
    public void Ring_descriptors_that_are_not_eventfds_are_refused(VhostUserRequest request)
    {
        using var server = new TestServer();
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0);
        using var notAnEventFd = MemFd.Create("not-an-eventfd", 4096);
        Assert.NotEqual(0UL, fe.SendWithAck(request, TestFrontEnd.U64(0), notAnEventFd));
        server.WaitForLog($"queue 0: the descriptor for {request.SpecName()} is not an eventfd");
        // The ring keeps its old descriptors and goes on serving.
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Flush, 0, default));
    }

    [Fact]
    public void Eventfds_are_told_apart_from_other_descriptors()
    {
        using var eventFd = EventFd.Create();
        using var memFd = MemFd.Create("memfd", 4096);
        Assert.True(EventFd.IsEventFd(eventFd.Handle));
        Assert.False(EventFd.IsEventFd(memFd));
    }
}
