using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using VirtioSharp.Block;
using VirtioSharp.Block.Nbd;
using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.Support;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Frontend;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// A real NBD server started for a test (nbdkit or qemu-nbd), in the foreground, killed when the
/// test is done. A missing tool fails the test.
/// </summary>
internal sealed class NbdServer : IDisposable
{
    private readonly Process _process;
    private readonly TextWriter _stderr = new StringWriter();

    private NbdServer(Process process, string uri, string? socket)
    {
        _process = process;
        Uri = uri;
        SocketPath = socket;
    }

    public string Uri { get; }
    public string? SocketPath { get; }
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    /// <summary><c>nbdkit ARGS</c> on a Unix socket in <paramref name="dir"/> (or on 127.0.0.1 with <paramref name="tcp"/>).</summary>
    public static NbdServer Nbdkit(TempDir dir, bool tcp, params string[] args)
    {
        if (tcp)
        {
            var port = FreePort();
            return Start("nbdkit", ["-f", "-i", "127.0.0.1", "-p", port.ToString(), .. args], $"nbd://127.0.0.1:{port}/", null, () => PortOpen(port));
        }
        var socket = dir.File($"nbd-{Guid.NewGuid():N}"[..16] + ".sock");
        return Start("nbdkit", ["-f", "-U", socket, .. args], $"nbd+unix:///?socket={socket}", socket, () => UnixOpen(socket));
    }

    /// <summary><c>qemu-nbd -t --shared=N</c> exporting <paramref name="image"/> (raw) on a Unix socket.</summary>
    public static NbdServer QemuNbd(TempDir dir, string image, int shared, string export = "disk", bool tcp = false)
    {
        if (tcp)
        {
            var port = FreePort();
            return Start("qemu-nbd", ["-t", $"--shared={shared}", "-f", "raw", "-x", export, "-b", "127.0.0.1", "-p", port.ToString(), "--cache=none", "--aio=threads", image],
                $"nbd://127.0.0.1:{port}/{export}", null, () => PortOpen(port));
        }
        var socket = dir.File($"qnbd-{Guid.NewGuid():N}"[..16] + ".sock");
        return Start("qemu-nbd", ["-t", $"--shared={shared}", "-f", "raw", "-x", export, "-k", socket, "--cache=none", "--aio=threads", image],
            $"nbd+unix:///{export}?socket={socket}", socket, () => UnixOpen(socket));
    }

    /// <summary>
    /// The server accepts on <paramref name="path"/>: the file appears at bind(), before listen(),
    /// so only a connection shows it is ready.
    /// </summary>
    private static bool UnixOpen(string path)
    {
        if (!File.Exists(path))
            return false;
        try
        {
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Starts the same server again on the same address (after a kill).</summary>
    public static NbdServer Restart(NbdServer old, params string[] nbdkitArgs)
    {
        var socket = old.SocketPath!;
        File.Delete(socket);
        return Start("nbdkit", ["-f", "-U", socket, .. nbdkitArgs], old.Uri, socket, () => UnixOpen(socket));
    }

    private static NbdServer Start(string tool, string[] args, string uri, string? socket, Func<bool> ready)
    {
        // In a session of its own (setsid runs the tool in place, same pid), so no signal meant for
        // the test host's process group reaches the server.
        var info = new ProcessStartInfo("setsid") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true };
        info.ArgumentList.Add(tool);
        foreach (var a in args)
            info.ArgumentList.Add(a);
        // From the launcher thread: nbdkit asks for SIGTERM when the thread that started it ends.
        var p = ProcessLauncher.Start(info);
        var server = new NbdServer(p, uri, socket);
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (server._stderr) server._stderr.WriteLine(e.Data); };
        p.OutputDataReceived += (_, _) => { };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        var deadline = Environment.TickCount64 + 10_000;
        while (!ready())
        {
            if (p.HasExited)
                throw new InvalidOperationException($"{tool} exited with {p.ExitCode}: {server.Errors}");
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"{tool} did not start listening: {server.Errors}");
            Thread.Sleep(10);
        }
        return server;
    }

    public string Errors
    {
        get { lock (_stderr) return _stderr.ToString() ?? ""; }
    }

    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }
    }

    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    private static bool PortOpen(int port)
    {
        try
        {
            using var c = new TcpClient();
            c.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>The export's bytes, read from the server by <c>qemu-img convert</c> (not through us).</summary>
    public static byte[] ReadBack(string uri, TempDir dir)
    {
        var output = dir.File($"back-{Guid.NewGuid():N}.raw");
        Run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, output);
        var bytes = File.ReadAllBytes(output);
        File.Delete(output);
        return bytes;
    }

    public static string Run(string tool, params string[] args)
    {
        var info = new ProcessStartInfo(tool) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args)
            info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{tool} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr}");
        return stdout.Result;
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}

/// <summary><c>vblk serve</c>'s pieces in-process over an NBD backend, and our driver connected to it through vhost-user.</summary>
internal sealed class NbdRig : IDisposable
{
    public NbdRig(TempDir dir, string uri, NbdOptions? options = null, int queues = 2, int queueSize = 128)
    {
        Log = new ListLogSink();
        Backend = NbdBackend.Open(NbdUri.Parse(uri), (options ?? new NbdOptions()) with { Log = Log });
        Device = new BlkDevice(Backend, new BlkDeviceOptions { NumQueues = queues, QueueSize = queueSize, Log = Log });
        var socket = dir.File($"v-{Guid.NewGuid():N}"[..12] + ".sock");
        Server = new VhostUserBlkServer(Device, socket, Log);
        Server.Start();
        Transport = VhostUserFrontendTransport.Connect(socket, new VhostUserFrontendOptions { MemorySize = 64 << 20 });
        Driver = BlkDriver.Start(Transport, new BlkDriverOptions { QueueSize = queueSize, NumQueues = queues });
    }

    public ListLogSink Log { get; }
    public NbdBackend Backend { get; }
    public BlkDevice Device { get; }
    public VhostUserBlkServer Server { get; }
    public VhostUserFrontendTransport Transport { get; }
    public BlkDriver Driver { get; }

    public void Dispose()
    {
        Driver.Dispose();
        Transport.Dispose();
        Server.Dispose();
        Backend.Dispose();
    }
}

/// <summary><c>vblk serve</c> as its own process on an NBD URI, ready when its vhost-user socket accepts.</summary>
internal static class VblkServe
{
    public static VirtioSharp.Tests.Vm.BackgroundProcess Start(string socket, string uri, params string[] extra)
    {
        var server = new VirtioSharp.Tests.Vm.BackgroundProcess("dotnet", [VirtioSharp.Tests.Vm.Repo.VblkDll, "serve", uri, "--socket", socket, .. extra]);
        try
        {
            server.WaitForSocket(socket, TimeSpan.FromSeconds(60)); // the socket file appears once it listens
            return server;
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }
}
