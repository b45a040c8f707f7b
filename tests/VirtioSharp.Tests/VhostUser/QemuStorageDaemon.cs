using System.Diagnostics;
using System.Text;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A qemu-storage-daemon exporting one block node as vhost-user-blk on a temporary socket. The
/// tests need the real program: a missing binary fails the test (CI installs qemu-utils).
/// </summary>
public sealed class QemuStorageDaemon : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private QemuStorageDaemon(Process process, string socketPath, string directory)
    {
        _process = process;
        SocketPath = socketPath;
        Directory = directory;
    }

    public string SocketPath { get; }
    public string Directory { get; }
    public string Output { get { lock (_output) return _output.ToString(); } }

    /// <summary>Exports a raw image file.</summary>
    public static QemuStorageDaemon ExportFile(TempDir dir, string image, bool writable = true, string? discard = null, int numQueues = 1) =>
        Start(dir, [
            "--blockdev", $"driver=file,node-name=file0,filename={image}{(discard is null ? "" : $",discard={discard}")}",
            "--blockdev", $"driver=raw,node-name=disk0,file=file0{(discard is null ? "" : $",discard={discard}")}",
        ], writable, numQueues);

    /// <summary>Exports a null-co device of <paramref name="size"/> bytes whose reads return zeroes.</summary>
    public static QemuStorageDaemon ExportNull(TempDir dir, ulong size, int numQueues = 1) =>
        Start(dir, ["--blockdev", $"driver=null-co,node-name=disk0,size={size},read-zeroes=on"], true, numQueues);

    private static QemuStorageDaemon Start(TempDir dir, string[] blockdevs, bool writable, int numQueues)
    {
        var socket = Path.Combine(dir.Path, "vhost.sock");
        var psi = new ProcessStartInfo(Binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in blockdevs)
            psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--export");
        psi.ArgumentList.Add($"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket},writable={(writable ? "on" : "off")},num-queues={numQueues}");
        // qemu-storage-daemon(1): the pid file is written once the exports listen, "clients may begin connecting".
        var pidFile = Path.Combine(dir.Path, "qsd.pid");
        File.Delete(pidFile); // a killed predecessor's
        psi.ArgumentList.Add("--pidfile");
        psi.ArgumentList.Add(pidFile);
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {Binary}");
        var qsd = new QemuStorageDaemon(process, socket, dir.Path);
        process.OutputDataReceived += (_, e) => qsd.Append(e.Data);
        process.ErrorDataReceived += (_, e) => qsd.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        // Its socket file appears at bind(), a moment before listen(), and a probe connection could get the
        // test's own one refused (one front-end at a time): the pid file is the sign.
        try
        {
            Support.ServerReady.WaitForFile(pidFile, () => process.HasExited,
                () => (process.HasExited ? $"qemu-storage-daemon exited with {process.ExitCode}\n" : "") + qsd.Output, withContent: true);
        }
        catch
        {
            qsd.Dispose();
            throw;
        }
        return qsd;
    }

    /// <summary>The qemu-storage-daemon binary; fails loudly when it is not installed.</summary>
    public static string Binary => FindTool("qemu-storage-daemon");

    public static string FindTool(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':'))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        throw new FileNotFoundException($"{name} is not installed (Debian package qemu-utils / qemu-system-common); interop tests need it");
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_output)
            _output.AppendLine(line);
    }

    /// <summary>Ends the daemon (SIGKILL via Process.Kill) and waits for it.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}

/// <summary>A temporary directory removed at the end of a test.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "vs-" + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
