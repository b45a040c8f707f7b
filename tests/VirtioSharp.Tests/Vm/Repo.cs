using System.Diagnostics;

namespace VirtioSharp.Tests.Vm;

/// <summary>Paths and process helpers for tests that run real peers.</summary>
internal static class Repo
{
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "VirtioSharp.slnx")))
                return dir.FullName;
        }
        throw new InvalidOperationException("repository root (VirtioSharp.slnx) not found above the test binaries");
    }

    /// <summary>The vblk CLI built next to the tests (the test project references it).</summary>
    public static string VblkDll => Path.Combine(AppContext.BaseDirectory, "vblk.dll");

    public static string Script(string name) => Path.Combine(Root, "scripts", name);

    /// <summary>Runs a program to completion and returns its exit code and combined output.</summary>
    public static (int ExitCode, string Output) Run(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Root };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        var output = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            lock (output) return (-1, output + $"\n(timed out after {timeout.TotalSeconds} s)");
        }
        p.WaitForExit();
        lock (output) return (p.ExitCode, output.ToString());
    }
}

/// <summary>A background process whose output is collected (a back-end under test).</summary>
internal sealed class BackgroundProcess : IDisposable
{
    private readonly Process _process;
    private readonly System.Text.StringBuilder _output = new();

    public BackgroundProcess(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Repo.Root };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        _process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    private void Append(string? line)
    {
        if (line is not null)
            lock (_output) _output.AppendLine(line);
    }

    public string Output { get { lock (_output) return _output.ToString(); } }
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    /// <summary>Waits for the process to end (after a kill); throws if it does not.</summary>
    public void WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
            throw new TimeoutException($"process {_process.Id} did not exit within {timeout.TotalSeconds} s:\n{Output}");
        _process.WaitForExit();
    }
    /// <summary>Sends <paramref name="signal"/> and waits for the process to end; returns its exit code (137 after SIGKILL).</summary>
    public int Signal(int signal, TimeSpan timeout)
    {
        TestNative.Kill(_process.Id, signal);
        if (!_process.WaitForExit(timeout))
            throw new TimeoutException($"back-end did not end within {timeout.TotalSeconds} s of signal {signal}:\n{Output}");
        _process.WaitForExit();
        return _process.ExitCode;
    }
    public int ExitCode => _process.ExitCode;

    /// <summary>
    /// Waits for the file the server creates once it accepts connections (<see cref="Support.ServerReady"/>):
    /// the socket of <c>vblk serve</c>, the <c>--pidfile</c> of qemu-storage-daemon. Never shorter than
    /// <see cref="Support.ServerReady.Timeout"/>: a process start is slow on a loaded runner.
    /// </summary>
    public void WaitForSocket(string path, TimeSpan timeout, bool withContent = false) =>
        Support.ServerReady.WaitForFile(path, () => _process.HasExited,
            () => (_process.HasExited ? $"exit code {_process.ExitCode}\n" : "") + Output,
            timeout > Support.ServerReady.Timeout ? timeout : Support.ServerReady.Timeout, withContent);

    /// <summary>Asks the process to stop with SIGTERM and waits; returns its exit code.</summary>
    public int Stop(TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            TestNative.Kill(_process.Id, 15);
            if (!_process.WaitForExit(timeout))
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
                throw new TimeoutException($"back-end did not stop within {timeout.TotalSeconds} s of SIGTERM:\n{Output}");
            }
        }
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
        _process.Dispose();
    }
}

internal static partial class TestNative
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    internal static partial int Kill(int pid, int signal);

    /// <summary>dup(2): the copy is not close-on-exec, so a child process inherits it.</summary>
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "dup")]
    internal static partial int Dup(int fd);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "close")]
    internal static partial int Close(int fd);
}
