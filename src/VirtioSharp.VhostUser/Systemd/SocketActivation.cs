using System.Globalization;
using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Systemd;

/// <summary>
/// systemd socket activation (sd_listen_fds(3)): the service manager binds and listens on the
/// socket, keeps it open across restarts of the service, and passes it to each new process as
/// descriptor 3 with LISTEN_PID (the process it is meant for), LISTEN_FDS (how many) and
/// LISTEN_FDNAMES (their names) in the environment. Connections that arrive while no process
/// runs wait in the socket's backlog instead of being refused.
/// </summary>
public static class SocketActivation
{
    /// <summary>SD_LISTEN_FDS_START: the first passed descriptor.</summary>
    public const int FirstFd = 3;

    /// <summary>
    /// The listening socket systemd passed, or null when this process was not socket-activated
    /// (no LISTEN_PID, or one naming another process). A socket passed in a way vhost-user cannot use
    /// (several of them, a datagram or TCP socket, one not listening) is an <see cref="IOException"/> with one line.
    /// The variables are removed from the environment, so child processes do not take them for their own.
    /// </summary>
    public static UnixFdSocket? TryTake(out string path, out string? name)
    {
        path = "";
        name = null;
        var pidText = Environment.GetEnvironmentVariable("LISTEN_PID");
        var fdsText = Environment.GetEnvironmentVariable("LISTEN_FDS");
        var names = Environment.GetEnvironmentVariable("LISTEN_FDNAMES");
        if (pidText is null)
            return null;
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        if (!int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
            throw new IOException($"socket activation: LISTEN_PID '{pidText}' is not a process id");
        if (pid != Environment.ProcessId)
            return null; // meant for the process that started us, not for us
        var count = Parse(fdsText, "LISTEN_FDS");
        if (count == 0)
            return null;
        if (count != 1)
            throw new IOException($"socket activation: systemd passed {count} sockets (LISTEN_FDS); vblk serve takes exactly one (one ListenStream= per .socket unit)");
        name = string.IsNullOrEmpty(names) ? null : names.Split(':')[0];
        try
        {
            return UnixFdSocket.AdoptListening(FirstFd, out path);
        }
        catch (IOException e)
        {
            throw new IOException($"socket activation: {e.Message}", e);
        }
    }

    private static int Parse(string? text, string variable)
    {
        if (text is null)
            throw new IOException($"socket activation: LISTEN_PID is set but {variable} is not");
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            throw new IOException($"socket activation: {variable} '{text}' is not a count of descriptors");
        return n;
    }
}
