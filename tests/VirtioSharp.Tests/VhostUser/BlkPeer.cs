using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>Which vhost-user-blk back-end a front-end test talks to.</summary>
public enum PeerKind
{
    /// <summary>qemu-storage-daemon, a real peer nobody here wrote.</summary>
    Qsd,
    /// <summary>Our own back-end (<see cref="VhostUserBlkServer"/>), in this process.</summary>
    Vblk,
}

/// <summary>A vhost-user-blk back-end on a temporary socket, exporting a raw image or a null device.</summary>
public sealed class BlkPeer : IDisposable
{
    private readonly QemuStorageDaemon? _qsd;
    private readonly VhostUserBlkServer? _server;
    private readonly IBlockBackend? _backend;

    private BlkPeer(PeerKind kind, string socket, QemuStorageDaemon? qsd, VhostUserBlkServer? server, IBlockBackend? backend)
    {
        Kind = kind;
        SocketPath = socket;
        _qsd = qsd;
        _server = server;
        _backend = backend;
    }

    public PeerKind Kind { get; }
    public string SocketPath { get; }
    public ListLogSink Log { get; } = new();

    /// <summary>Exports a raw image. <paramref name="unmap"/> asks qemu-storage-daemon for discard=unmap (ours always unmaps).</summary>
    public static BlkPeer ExportFile(PeerKind kind, TempDir dir, string image, bool writable = true, bool unmap = false, int numQueues = 1)
    {
        if (kind == PeerKind.Qsd)
        {
            var qsd = QemuStorageDaemon.ExportFile(dir, image, writable, unmap ? "unmap" : null, numQueues);
            return new BlkPeer(kind, qsd.SocketPath, qsd, null, null);
        }
        var backend = FileBackend.Open(image, readOnly: !writable);
        return Serve(kind, dir, backend, numQueues, readOnly: !writable);
    }

    /// <summary>Exports a device of <paramref name="size"/> bytes that reads zeroes and drops writes.</summary>
    public static BlkPeer ExportNull(PeerKind kind, TempDir dir, ulong size, int numQueues = 1)
    {
        if (kind == PeerKind.Qsd)
        {
            var qsd = QemuStorageDaemon.ExportNull(dir, size, numQueues);
            return new BlkPeer(kind, qsd.SocketPath, qsd, null, null);
        }
        return Serve(kind, dir, new NullBackend(size), numQueues, readOnly: false);
    }

    private static BlkPeer Serve(PeerKind kind, TempDir dir, IBlockBackend backend, int numQueues, bool readOnly)
    {
        var socket = dir.File("vblk.sock");
        var log = new ListLogSink();
        var device = new BlkDevice(backend, new BlkDeviceOptions { NumQueues = numQueues, ReadOnly = readOnly, Log = log });
        var server = new VhostUserBlkServer(device, socket, log);
        server.Start();
        return new BlkPeer(kind, socket, null, server, backend);
    }

    /// <summary>Stops the back-end and releases the image (qemu-storage-daemon holds a lock on it).</summary>
    public void Stop()
    {
        _qsd?.Dispose();
        _server?.Dispose();
        _backend?.Dispose();
    }

    public void Dispose() => Stop();

    public override string ToString() => Kind.ToString();
}

/// <summary>qemu's own tools, run on an image the test wrote through our front-end.</summary>
internal static class QemuTools
{
    public static (int ExitCode, string Output) Run(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(QemuStorageDaemon.FindTool(tool))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60_000))
        {
            p.Kill();
            throw new TimeoutException($"{tool} did not finish");
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    /// <summary>Blocks the file occupies on disk (stat %b, 512-byte units).</summary>
    public static long AllocatedBlocks(string path)
    {
        var psi = new ProcessStartInfo("stat", ["-c", "%b", path]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return long.Parse(text.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
