using System.Net.Sockets;
using System.Text;
using VirtioSharp.Native;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Cli;

/// <summary>
/// <c>vblk serve</c> under systemd, without systemd: the test plays the service manager. It binds
/// and listens on the socket, passes it to the back-end as descriptor 3 with LISTEN_PID,
/// LISTEN_FDS and LISTEN_FDNAMES set as systemd sets them, listens on NOTIFY_SOCKET for READY=1,
/// and keeps the socket open across a restart, so a front-end that connects while no back-end
/// runs waits instead of being refused.
/// </summary>
public sealed class SocketActivationTests
{
    /// <summary>
    /// bash puts descriptor $0 at 3, closes $0, sets the variables with its own pid (exec keeps it)
    /// and becomes vblk.
    /// </summary>
    private const string Activate =
        "eval \"exec 3<&$0 $0<&-\"; export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=vblk.socket NOTIFY_SOCKET=\"$1\"; shift; exec \"$@\"";

    private static BackgroundProcess StartActivated(Socket listener, string notifySocket, params string[] vblkArgs)
    {
        // A copy without close-on-exec for the child (dup clears FD_CLOEXEC); ours is closed once it has started.
        var passed = TestNative.Dup((int)listener.SafeHandle.DangerousGetHandle());
        Assert.True(passed >= 0, "dup failed");
        try
        {
            return new BackgroundProcess("bash", ["-c", Activate, passed.ToString(System.Globalization.CultureInfo.InvariantCulture), notifySocket, "dotnet", Repo.VblkDll, "serve", .. vblkArgs]);
        }
        finally
        {
            TestNative.Close(passed);
        }
    }

    private static Socket NotifySocket(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        s.ReceiveTimeout = 30_000;
        return s;
    }

    /// <summary>Reads notifications until one carries <paramref name="line"/>; returns all that came.</summary>
    private static string WaitFor(Socket notify, string line, BackgroundProcess server)
    {
        var seen = new StringBuilder();
        var buffer = new byte[4096];
        while (true)
        {
            int n;
            try
            {
                n = notify.Receive(buffer);
            }
            catch (SocketException e)
            {
                throw new TimeoutException($"no {line} ({e.SocketErrorCode}); got: {seen}\n{server.Output}");
            }
            var text = Encoding.UTF8.GetString(buffer, 0, n);
            seen.Append(text).Append('|');
            if (text.Split('\n').Contains(line))
                return seen.ToString();
        }
    }

    [Fact]
    public void The_passed_socket_is_served_READY_1_is_sent_and_a_restart_refuses_no_connection()
    {
        using var dir = new TempDir();
        var path = dir.File("vblk.sock");
        using var notify = NotifySocket(dir.File("notify.sock"));
        // Bound in place, as systemd binds a ListenStream= path (UnixFdSocket.Listen binds a temporary
        // name and links the path to it, so the address the back-end reads back would be that name).
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(4);
        var args = new[] { "--backend", "memory", "--size", "1M" };

        using (var first = StartActivated(listener, dir.File("notify.sock"), args))
        {
            var said = WaitFor(notify, "READY=1", first);
            Assert.Contains("STATUS=serving", said);
            using (var f = TestFrontEnd.Connect(path))
                Assert.NotEqual(0UL, f.Negotiate());
            Assert.Contains("socket passed by the service manager", first.Output);
            Assert.Contains($"accepting on {path}", first.Output);
            TestNative.Kill(first.Pid, 9); // a crash: no clean-up at all
            first.WaitForExit(TimeSpan.FromSeconds(10));
        }

        // Nobody accepts now, but the socket is still listening: the connection waits in its backlog.
        Assert.True(UnixFdSocket.TryConnect(path, out var early, out var errno), $"connection refused while the back-end was down: errno {errno}");
        Assert.True(File.Exists(path), "the socket file went away with the back-end");

        using var second = StartActivated(listener, dir.File("notify.sock"), args);
        WaitFor(notify, "READY=1", second);
        using (var f = TestFrontEnd.Adopt(early!))
            Assert.NotEqual(0UL, f.Negotiate()); // the connection made during the gap is served
        Assert.Equal(0, second.Stop(TimeSpan.FromSeconds(10)));
        Assert.Contains("STOPPING=1", WaitFor(notify, "STOPPING=1", second));
        Assert.Contains("the service manager keeps the socket open", second.Output);
        Assert.True(UnixFdSocket.TryConnect(path, out var after, out _), "the socket stopped listening when the back-end stopped");
        after!.Dispose();
    }

    [Theory]
    [InlineData("exec 3</dev/null", "socket activation: descriptor 3 is not a socket")]
    [InlineData("exec 3<>/dev/null; exec 3>&-", "socket activation: descriptor 3")]
    public void A_descriptor_that_is_not_a_listening_unix_socket_is_refused_in_one_line(string setUp, string expected)
    {
        var script = $"{setUp}; export LISTEN_PID=$$ LISTEN_FDS=1; exec dotnet \"$0\" serve --backend null --size 1M";
        var (code, output) = Repo.Run("bash", ["-c", script, Repo.VblkDll], TimeSpan.FromSeconds(60));
        Assert.True(code == 2, $"exit {code}: {output}");
        Assert.StartsWith($"vblk serve: {expected}", output.Trim());
        Assert.DoesNotContain("   at ", output); // no stack trace
    }

    [Fact]
    public void A_datagram_socket_is_refused_naming_ListenStream()
    {
        using var dir = new TempDir();
        using var dgram = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        dgram.Bind(new UnixDomainSocketEndPoint(dir.File("d.sock")));
        var passed = TestNative.Dup((int)dgram.Handle);
        try
        {
            var script = "eval \"exec 3<&$0 $0<&-\"; export LISTEN_PID=$$ LISTEN_FDS=1; exec dotnet \"$1\" serve --backend null --size 1M";
            var (code, output) = Repo.Run("bash", ["-c", script, passed.ToString(System.Globalization.CultureInfo.InvariantCulture), Repo.VblkDll], TimeSpan.FromSeconds(60));
            Assert.True(code == 2, $"exit {code}: {output}");
            Assert.Equal("vblk serve: socket activation: descriptor 3 is not a stream socket (type 2); vhost-user needs SOCK_STREAM (ListenStream= in the .socket unit)", output.Trim());
        }
        finally
        {
            TestNative.Close(passed);
        }
    }
}
