namespace VirtioSharp.Tests.Support;

/// <summary>
/// The one way tests wait for a server they started: for a file the server creates only once it
/// accepts connections. <c>vblk serve</c> (and any <c>VhostUserServer</c>) links its socket path into
/// place after listen(2) (<c>UnixFdSocket.Listen</c>), so its socket file is that sign;
/// qemu-storage-daemon writes its <c>--pidfile</c> after its exports listen (its manual says so).
/// Not by a probe connection: our back-end and qemu-storage-daemon serve one front-end at a time, and
/// a connection made while the probe's session is still being torn down is refused.
/// </summary>
internal static class ServerReady
{
    /// <summary>Long enough for a process start on a loaded two-core runner; a server that exits fails at once.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Waits until <paramref name="path"/> exists (with content if <paramref name="withContent"/>).
    /// A server that has <paramref name="ended"/> never will, and fails the wait at once;
    /// <paramref name="describe"/> gives what it wrote, for the message.
    /// </summary>
    public static void WaitForFile(string path, Func<bool> ended, Func<string> describe, TimeSpan? timeout = null, bool withContent = false)
    {
        var limit = timeout ?? Timeout;
        var until = Environment.TickCount64 + (long)limit.TotalMilliseconds;
        while (!(File.Exists(path) && (!withContent || new FileInfo(path).Length > 0)))
        {
            if (ended())
                throw new InvalidOperationException($"the server ended before creating {path}:\n{describe()}");
            if (Environment.TickCount64 > until)
                throw new TimeoutException($"the server did not create {path} within {limit.TotalSeconds} s:\n{describe()}");
            Thread.Sleep(10);
        }
    }
}
