using System.Runtime.InteropServices;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// SIGINT and SIGTERM, caught from the start of <see cref="ServeRunner.Run"/>: a signal that arrives while
/// the server is still starting (a service manager stopping it at once) still stops it cleanly.
/// </summary>
internal sealed class StopSignal : IDisposable
{
    private readonly ManualResetEventSlim _signalled = new();
    private readonly PosixSignalRegistration _sigint;
    private readonly PosixSignalRegistration _sigterm;
    private string? _which;

    public StopSignal()
    {
        _sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        _sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true; // we stop cleanly ourselves
        _which ??= context.Signal.ToString();
        _signalled.Set();
    }

    /// <summary>Blocks until a signal (or <paramref name="stop"/>); <paramref name="flushIgnored"/> is the backend's <see cref="Block.IBlockBackend.FlushIgnored"/>.</summary>
    public void Wait(ILogSink log, CancellationToken stop, string? flushIgnored)
    {
        using var cancel = stop.Register(_signalled.Set);
        _signalled.Wait();
        var then = flushIgnored is null ? "closing the connection and flushing the image" : $"closing the connection ({flushIgnored})";
        log.Info($"stopping ({_which ?? "asked to"}): {then}");
    }

    public void Dispose()
    {
        _sigint.Dispose();
        _sigterm.Dispose();
        _signalled.Dispose();
    }
}
