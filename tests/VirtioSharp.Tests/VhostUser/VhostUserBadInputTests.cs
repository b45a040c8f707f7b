using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// Malformed and out-of-order messages: each gets an error reply (REPLY_ACK, or the message's own
/// error form) or the connection is closed, the problem is logged by name, and the server goes on
/// to serve the next front-end.
/// </summary>
public class VhostUserBadInputTests
{
    private enum Expect { ErrorAck, Closed, EmptyConfigReply }
    private enum Setup { Connected, Negotiated, WithMemory }

    private sealed record Case(Setup Setup, Action<TestFrontEnd> Send, Expect Expect, string Log);

    private static readonly Dictionary<string, Case> All = new()
    {
        ["wrong size, with need_reply"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringNum, new byte[4], needReply: true), Expect.ErrorAck, "payload is 4 bytes, expected 8"),
        ["wrong size, without need_reply"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringNum, new byte[12]), Expect.Closed, "VHOST_USER_SET_VRING_NUM: payload is 12 bytes, expected 8"),
        ["GET_FEATURES with a payload"] = new(Setup.Connected,
            f => f.Send(VhostUserRequest.GetFeatures, new byte[8], needReply: true), Expect.Closed, "VHOST_USER_GET_FEATURES: payload is 8 bytes, expected 0"),
        ["unknown request, with need_reply"] = new(Setup.Negotiated,
            f => f.Send((VhostUserRequest)77, new byte[8], needReply: true), Expect.ErrorAck, "request 77 (request 77) is not supported"),
        ["unknown request, without need_reply"] = new(Setup.Negotiated,
            f => f.Send((VhostUserRequest)77, default), Expect.Closed, "request 77 (request 77) is not supported"),
        ["unsupported request"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetLogBase, new byte[16], needReply: true), Expect.ErrorAck, "VHOST_USER_SET_LOG_BASE) is not supported"),
        ["reply flag on a request"] = new(Setup.Connected,
            f => f.Channel.Send(new VhostUserHeader(VhostUserRequest.SetOwner, VhostUserHeader.Version | VhostUserHeader.ReplyFlag, 0), default),
            Expect.Closed, "reply flag on a request"),
        ["bad protocol version"] = new(Setup.Connected,
            f => f.Channel.Send(new VhostUserHeader(VhostUserRequest.SetOwner, 2, 0), default), Expect.Closed, "protocol version 2, expected 1"),
        ["oversized payload"] = new(Setup.Connected, f =>
        {
            var header = new byte[VhostUserHeader.Length];
            new VhostUserHeader(VhostUserRequest.SetMemTable, VhostUserHeader.Version, 1 << 20).Write(header);
            f.SendRaw(header);
        }, Expect.Closed, "larger than any message"),
        ["connection closed inside the payload"] = new(Setup.Connected, f =>
        {
            var bytes = new byte[VhostUserHeader.Length + 10];
            new VhostUserHeader(VhostUserRequest.SetVringAddr, VhostUserHeader.Version, VringAddress.Length).Write(bytes);
            f.SendRaw(bytes);
            f.Channel.Socket.Shutdown();
        }, Expect.Closed, "connection closed inside the payload"),
        ["unoffered feature bits"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetFeatures, TestFrontEnd.U64(1UL << 60), needReply: true), Expect.ErrorAck, "were not offered"),
        ["unoffered protocol feature bits"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetProtocolFeatures, TestFrontEnd.U64(1UL << VhostUserFeatures.Pagefault | 1UL << VhostUserFeatures.ReplyAck), needReply: true),
            Expect.ErrorAck, "(PAGEFAULT) were not offered"),
        ["queue index out of range"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringNum, TestFrontEnd.State(5, 64), needReply: true), Expect.ErrorAck, "queue index 5 is out of range"),
        ["queue index out of range in GET_VRING_BASE"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.GetVringBase, TestFrontEnd.State(9, 0)), Expect.Closed, "VHOST_USER_GET_VRING_BASE: queue index 9 is out of range"),
        ["queue index out of range in SET_VRING_CALL"] = new(Setup.Negotiated, f =>
        {
            using var call = EventFd.Create();
            f.Send(VhostUserRequest.SetVringCall, TestFrontEnd.U64(3), true, call.Handle);
        }, Expect.ErrorAck, "queue index 3 is out of range"),
        ["ring size not a power of two"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 100), needReply: true), Expect.ErrorAck, "size 100 is not a power of two"),
        ["ring larger than the device's queue size"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 1024), needReply: true), Expect.ErrorAck, "size 1024 is not a power of two in 1..256"),
        ["ring base past 16 bits"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringBase, TestFrontEnd.State(0, 70000), needReply: true), Expect.ErrorAck, "base 70000 does not fit"),
        ["enable value other than 0 or 1"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringEnable, TestFrontEnd.State(0, 2), needReply: true), Expect.ErrorAck, "enable value 2"),
        ["missing memory descriptor"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region), needReply: true), Expect.ErrorAck, "1 regions came with 0 file descriptor(s)"),
        ["extra memory descriptor"] = new(Setup.Negotiated, f =>
        {
            using var other = MemFd.Create("extra", 4096);
            f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region), true, f.Ram, other);
        }, Expect.ErrorAck, "1 regions came with 2 file descriptor(s)"),
        ["descriptor on a message that takes none"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 64), true, f.Ram), Expect.ErrorAck, "1 unexpected file descriptor(s) attached"),
        ["two descriptors on SET_VRING_KICK"] = new(Setup.WithMemory, f =>
        {
            using var a = EventFd.Create();
            using var b = EventFd.Create();
            f.Send(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0), true, a.Handle, b.Handle);
        }, Expect.ErrorAck, "expected one eventfd, 2 came"),
        ["SET_VRING_KICK without descriptor or no-fd flag"] = new(Setup.WithMemory,
            f => f.Send(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0), needReply: true), Expect.ErrorAck, "expected one eventfd, 0 came"),
        ["polling requested (no kick descriptor)"] = new(Setup.WithMemory,
            f => f.Send(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0 | U64Payload.InvalidFdFlag), needReply: true), Expect.ErrorAck, "polling the ring without a kick descriptor"),
        ["too many descriptors for the socket"] = new(Setup.Negotiated, f =>
        {
            var fds = Enumerable.Range(0, UnixFdSocket.MaxReceivedFds + 1).Select(_ => EventFd.Create()).ToList();
            try
            {
                f.Send(VhostUserRequest.SetOwner, default, false, [.. fds.Select(e => e.Handle)]);
            }
            finally
            {
                fds.ForEach(e => e.Dispose());
            }
        }, Expect.Closed, "more than 16 file descriptors attached"),
        ["too many regions"] = new(Setup.Negotiated, f =>
        {
            var payload = new byte[MemoryTablePayload.LengthFor(8)];
            BitConverter.TryWriteBytes(payload, 9u);
            f.Send(VhostUserRequest.SetMemTable, payload, needReply: true);
        }, Expect.ErrorAck, "9 regions; at most 8"),
        ["overlapping regions"] = new(Setup.Negotiated, f =>
        {
            var a = f.Region with { Size = 1 << 20 };
            var b = a with { GuestAddress = a.GuestAddress + 4096, UserAddress = a.UserAddress + (2 << 20), MmapOffset = 2 << 20 };
            f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(a, b), true, f.Ram, f.Ram);
        }, Expect.ErrorAck, "regions overlap"),
        ["region larger than its file"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region with { Size = TestFrontEnd.RamSize * 4 }), true, f.Ram),
            Expect.ErrorAck, $"needs {TestFrontEnd.RamSize * 4} bytes but its file holds {TestFrontEnd.RamSize}"),
        ["region offset past its file"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region with { MmapOffset = TestFrontEnd.RamSize }), true, f.Ram),
            Expect.ErrorAck, "but its file holds"),
        ["region address space wrap"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region with { GuestAddress = ulong.MaxValue - 4095 }), true, f.Ram),
            Expect.ErrorAck, "guest range wraps"),
        ["empty region"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region with { Size = 0 }), true, f.Ram), Expect.ErrorAck, "is empty"),
        ["region backed by something that is not memory"] = new(Setup.Negotiated, f =>
        {
            using var notMemory = EventFd.Create();
            f.Send(VhostUserRequest.SetMemTable, TestFrontEnd.MemTable(f.Region), true, notMemory.Handle);
        }, Expect.ErrorAck, "is not a shared-memory file"),
        ["ADD_MEM_REG overlapping the table"] = new(Setup.WithMemory,
            f => f.Send(VhostUserRequest.AddMemReg, TestFrontEnd.SingleRegion(f.Region with { UserAddress = 0x1000 }), true, f.Ram), Expect.ErrorAck, "regions overlap"),
        ["ADD_MEM_REG without descriptor"] = new(Setup.WithMemory,
            f => f.Send(VhostUserRequest.AddMemReg, TestFrontEnd.SingleRegion(f.Region with { GuestAddress = 0x1_0000_0000, UserAddress = 0x1000 }), true),
            Expect.ErrorAck, "needs exactly one file descriptor, 0 came"),
        ["REM_MEM_REG of an unknown region"] = new(Setup.WithMemory,
            f => f.Send(VhostUserRequest.RemMemReg, TestFrontEnd.SingleRegion(f.Region with { Size = 4096 }), needReply: true), Expect.ErrorAck, "no region matches"),
        ["vring address no region covers"] = new(Setup.WithMemory, f =>
        {
            f.Do(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 64));
            var b = new byte[VringAddress.Length];
            new VringAddress(0, 0, f.UserBase, f.UserBase + 4096, f.UserBase + TestFrontEnd.RamSize - 64, 0).Write(b);
            f.Send(VhostUserRequest.SetVringAddr, b, needReply: true);
        }, Expect.ErrorAck, "available ring at user address"),
        ["vring address given as guest-physical"] = new(Setup.WithMemory, f =>
        {
            f.Do(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 64));
            var b = new byte[VringAddress.Length];
            new VringAddress(0, 0, TestFrontEnd.GuestBase, TestFrontEnd.GuestBase + 4096, TestFrontEnd.GuestBase + 8192, 0).Write(b);
            f.Send(VhostUserRequest.SetVringAddr, b, needReply: true);
        }, Expect.ErrorAck, "is not inside any memory region"),
        ["vring address before any memory table"] = new(Setup.Negotiated, f =>
        {
            var b = new byte[VringAddress.Length];
            new VringAddress(0, 0, 0x1000, 0x2000, 0x3000, 0).Write(b);
            f.Send(VhostUserRequest.SetVringAddr, b, needReply: true);
        }, Expect.ErrorAck, "ring addresses arrived before any memory table"),
        ["dirty logging asked for"] = new(Setup.WithMemory, f =>
        {
            var b = new byte[VringAddress.Length];
            new VringAddress(0, VringAddress.FlagLog, f.UserBase, f.UserBase + 4096, f.UserBase + 8192, 0).Write(b);
            f.Send(VhostUserRequest.SetVringAddr, b, needReply: true);
        }, Expect.ErrorAck, "VHOST_VRING_F_LOG"),
        ["kick before the memory table"] = new(Setup.Negotiated, f =>
        {
            using var kick = EventFd.Create();
            f.Do(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 64));
            f.Send(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0), true, kick.Handle);
        }, Expect.ErrorAck, "no memory table yet"),
        ["kick before the ring addresses"] = new(Setup.WithMemory, f =>
        {
            using var kick = EventFd.Create();
            f.Do(VhostUserRequest.SetVringNum, TestFrontEnd.State(0, 64));
            f.Send(VhostUserRequest.SetVringKick, TestFrontEnd.U64(0), true, kick.Handle);
        }, Expect.ErrorAck, "no ring addresses yet"),
        ["GET_CONFIG past the config space"] = new(Setup.Negotiated, f =>
        {
            var b = new byte[ConfigSpaceHeader.Length + 16];
            new ConfigSpaceHeader(250, 16, 0).Write(b);
            f.Send(VhostUserRequest.GetConfig, b);
        }, Expect.EmptyConfigReply, "VHOST_USER_GET_CONFIG refused: config range 250+16"),
        ["GET_CONFIG size disagreeing with the payload"] = new(Setup.Negotiated, f =>
        {
            var b = new byte[ConfigSpaceHeader.Length + 8];
            new ConfigSpaceHeader(0, 60, 0).Write(b);
            f.Send(VhostUserRequest.GetConfig, b);
        }, Expect.EmptyConfigReply, "expected 72 for 60 config bytes"),
        ["SET_CONFIG with a short payload"] = new(Setup.Negotiated,
            f => f.Send(VhostUserRequest.SetConfig, new byte[6], needReply: true), Expect.ErrorAck, "shorter than the 12-byte config header"),
    };

    public static TheoryData<string> Cases => [.. All.Keys];

    [Theory]
    [MemberData(nameof(Cases))]
    public void BadInputIsRefusedAndTheServerCarriesOn(string name)
    {
        var c = All[name];
        using var server = new TestServer();
        var fe = server.Connect();
        try
        {
            if (c.Setup >= Setup.Negotiated)
                fe.Negotiate();
            if (c.Setup >= Setup.WithMemory)
                fe.SetMemTable();
            c.Send(fe);
            switch (c.Expect)
            {
                case Expect.ErrorAck:
                    var reply = fe.Receive();
                    Assert.True(reply.HasValue, $"connection closed instead of an error reply\n{server.Dump()}");
                    Assert.NotEqual(0UL, BitConverter.ToUInt64(reply.Value.Payload));
                    // This connection is still usable.
                    Assert.Equal(2UL, fe.GetU64(VhostUserRequest.GetQueueNum));
                    break;
                case Expect.EmptyConfigReply:
                    var config = fe.Receive();
                    Assert.True(config.HasValue);
                    Assert.Equal(VhostUserRequest.GetConfig, config.Value.Header.Request);
                    Assert.Empty(config.Value.Payload);
                    break;
                case Expect.Closed:
                    Assert.True(fe.WaitClosed(), $"the back-end kept the connection open\n{server.Dump()}");
                    break;
            }
            TestServer.Eventually(() => server.Log.Contains(c.Log), $"a log line with '{c.Log}':\n{server.Dump()}");
        }
        finally
        {
            fe.Dispose();
        }

        // The server accepts the next front-end and serves it.
        TestServer.Eventually(() => server.Server.SessionsEnded == 1, "the bad connection to end");
        using var next = server.Connect();
        next.Negotiate();
        next.SetMemTable();
        Assert.Equal(Block.BlkStatus.Ok, next.SetupQueue(0).Request(Block.BlkRequestType.Flush, 0, default));
    }
}
