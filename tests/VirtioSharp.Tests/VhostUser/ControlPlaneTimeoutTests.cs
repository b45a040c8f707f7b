using System.Diagnostics;
using VirtioSharp.Tests.Vm;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A front-end that sends part of a message and stops must not hold the back-end's connection
/// thread: every wait inside a message is bounded, and stopping the server ends it at once.
/// </summary>
public sealed class ControlPlaneTimeoutTests
{
    /// <summary>The first 6 bytes of a 12-byte GET_FEATURES header.</summary>
    private static byte[] HalfHeader()
    {
        var header = new byte[VhostUserHeader.Length];
        VhostUserHeader.ForRequest(VhostUserRequest.GetFeatures, 0, false).Write(header);
        return header[..6];
    }

    [Fact]
    public async Task Half_a_header_then_stop_the_server_returns_at_once()
    {
        using var s = new TestServer(numQueues: 1);
        using var f = s.Connect();
        TestServer.Eventually(() => s.Server.IsConnected, "the session to start");
        f.SendRaw(HalfHeader());
        Thread.Sleep(100); // the session thread is inside the message now
        var clock = Stopwatch.StartNew();
        await Task.Run(s.Server.Stop).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"stop took {clock.Elapsed}\n{s.Dump()}");
        Assert.True(s.Log.Contains("the server is stopping"), s.Dump());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Part_of_a_message_and_silence_closes_the_connection_and_the_next_front_end_is_served(bool inPayload)
    {
        using var s = new TestServer(numQueues: 1, messageTimeout: TimeSpan.FromMilliseconds(300));
        using (var f = s.Connect())
        {
            if (inPayload)
            {
                // SET_FEATURES announces 8 payload bytes; 3 come.
                var message = new byte[VhostUserHeader.Length + 3];
                VhostUserHeader.ForRequest(VhostUserRequest.SetFeatures, 8, false).Write(message);
                f.SendRaw(message);
            }
            else
                f.SendRaw(HalfHeader());
            Assert.True(f.WaitClosed(), "the back-end kept a connection that stopped mid-message");
        }
        Assert.True(s.Log.Contains("and nothing more for 0.3 s"), s.Dump());
        using var next = s.Connect(); // at once: the closed connection may still be stopping its rings
        Assert.NotEqual(0UL, next.Negotiate());
        Assert.Equal(0, s.Server.Refused);
    }

    [Fact]
    public void Vblk_serve_stops_on_SIGTERM_within_seconds_while_a_front_end_is_stuck_mid_message()
    {
        using var dir = new TempDir();
        var socket = dir.File("s.sock");
        using var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", "--backend", "null", "--size", "1M", "--socket", socket]);
        server.WaitForSocket(socket, TimeSpan.FromSeconds(30));
        using var f = TestFrontEnd.Connect(socket);
        f.SendRaw(HalfHeader());
        TestServer.Eventually(() => server.Output.Contains("front-end connected", StringComparison.Ordinal), "the session to start");
        Thread.Sleep(100);
        var clock = Stopwatch.StartNew();
        var code = server.Stop(TimeSpan.FromSeconds(5));
        Assert.True(code == 0, $"exit code {code}\n{server.Output}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"SIGTERM took {clock.Elapsed}");
        Assert.Contains("the server is stopping", server.Output);
    }
}
