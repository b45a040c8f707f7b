using System.Net.Sockets;
using System.Text;

namespace VirtioSharp.VhostUser.Systemd;

/// <summary>
/// sd_notify(3) for a Type=notify service: one datagram per state change ("READY=1",
/// "STOPPING=1", "STATUS=...") to the Unix socket named by NOTIFY_SOCKET (a path, or "@name" for
/// the abstract namespace). Without NOTIFY_SOCKET there is nobody to tell and nothing is sent.
/// </summary>
public sealed class ServiceNotifier : IDisposable
{
    private readonly Socket _socket;
    private readonly UnixDomainSocketEndPoint _target;

    private ServiceNotifier(Socket socket, UnixDomainSocketEndPoint target, string address)
    {
        _socket = socket;
        _target = target;
        Address = address;
    }

    /// <summary>NOTIFY_SOCKET as given.</summary>
    public string Address { get; }

    /// <summary>A notifier for NOTIFY_SOCKET, or null when it is not set. An address we cannot use is an <see cref="IOException"/>.</summary>
    public static ServiceNotifier? FromEnvironment()
    {
        var address = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(address))
            return null;
        // Children must not notify in our name.
        Environment.SetEnvironmentVariable("NOTIFY_SOCKET", null);
        UnixDomainSocketEndPoint target;
        if (address[0] == '/')
            target = new UnixDomainSocketEndPoint(address);
        else if (address[0] == '@')
            target = new UnixDomainSocketEndPoint("\0" + address[1..]); // abstract namespace
        else
            throw new IOException($"NOTIFY_SOCKET '{address}' is neither an absolute path nor an abstract socket (@name)");
        var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        return new ServiceNotifier(socket, target, address);
    }

    /// <summary>Sends one notification ("READY=1", or several "KEY=value" lines); false with the reason if it could not be sent.</summary>
    public bool Notify(string state, out string? error)
    {
        try
        {
            _socket.SendTo(Encoding.UTF8.GetBytes(state), _target);
            error = null;
            return true;
        }
        catch (SocketException e)
        {
            error = $"notifying the service manager at {Address} failed: {e.Message}";
            return false;
        }
    }

    public void Dispose() => _socket.Dispose();
}
