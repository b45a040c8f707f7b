using System.Runtime.InteropServices;
using System.Text;
using VirtioSharp.Memory;

namespace VirtioSharp.Native;

/// <summary>What is at a socket path.</summary>
public enum SocketPathState
{
    Missing,
    /// <summary>A socket someone is listening on.</summary>
    Listening,
    /// <summary>A socket file nobody listens on any more (left by a process that died).</summary>
    Stale,
    /// <summary>Something that is not a socket.</summary>
    NotASocket,
}

/// <summary>
/// A Unix stream socket that carries file descriptors (SCM_RIGHTS), as vhost-user needs.
/// Blocking; one reader and one writer at a time. Received descriptors arrive close-on-exec,
/// each wrapped in a <see cref="SafeFdHandle"/> the caller owns.
/// </summary>
public sealed unsafe class UnixFdSocket : IDisposable
{
    /// <summary>Most descriptors accepted in one receive; more is reported as truncation.</summary>
    public const int MaxReceivedFds = 16;
    /// <summary>Most descriptors the kernel carries in one message (SCM_MAX_FD).</summary>
    public const int MaxSentFds = 253;

    private UnixFdSocket(SafeFdHandle handle) => Handle = handle;

    public SafeFdHandle Handle { get; }
    public int Fd => Handle.Fd;

    /// <summary>
    /// Creates a listening socket bound to <paramref name="path"/> (which must not exist). The path
    /// appears only once the socket listens: it is bound and put to listen under a temporary name in
    /// the same folder, then linked to <paramref name="path"/>. Bound in place, the file would exist
    /// before listen(2), and a peer that waits for the file and connects at once (QEMU started by a
    /// script, a test) could be refused (ECONNREFUSED) in between. getsockname(2) on the socket gives
    /// the temporary name, which is gone by then.
    /// </summary>
    public static UnixFdSocket Listen(string path, int backlog = 4)
    {
        Address(path, out _); // the name asked for must fit a socket address, whatever the temporary one
        var staging = StagingPath(path);
        if (staging is null)
            return BindAndListen(path, path, backlog); // no room for a temporary name: bound in place
        UnixFdSocket? socket = null;
        try
        {
            socket = BindAndListen(staging, path, backlog);
            if (Interop.Link(staging, path) == 0)
                return socket;
            var errno = Marshal.GetLastPInvokeError();
            if (errno == Interop.EEXIST)
                throw new NativeCallException($"bind {path}", Interop.EADDRINUSE); // what bind(2) says of a taken path
            socket.Dispose();
            socket = null;
            return BindAndListen(path, path, backlog); // a file system without hard links: bound in place
        }
        catch
        {
            socket?.Dispose();
            throw;
        }
        finally
        {
            try
            {
                File.Delete(staging); // the socket keeps listening under the name linked above
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>A fresh name beside <paramref name="path"/> that fits a socket address, or null if none fits.</summary>
    private static string? StagingPath(string path)
    {
        var folder = Path.GetDirectoryName(path);
        var staging = Path.Combine(string.IsNullOrEmpty(folder) ? "." : folder, $".vblk-{Random.Shared.Next():x8}");
        return Encoding.UTF8.GetByteCount(staging) < SockAddrUn.PathSize ? staging : null;
    }

    /// <summary>bind(2) to <paramref name="path"/> and listen(2); errors name <paramref name="named"/>, the path asked for.</summary>
    private static UnixFdSocket BindAndListen(string path, string named, int backlog)
    {
        var socket = NewSocket();
        try
        {
            var address = Address(path, out var length);
            if (Interop.Bind(socket.Handle, &address, length) != 0)
                throw NativeCallException.FromLastError($"bind {named}");
            if (Interop.Listen(socket.Handle, backlog) != 0)
                throw NativeCallException.FromLastError("listen");
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Takes over descriptor <paramref name="fd"/>, inherited from the process that started us
    /// (systemd socket activation), after checking it is a listening AF_UNIX stream socket.
    /// It becomes close-on-exec. <paramref name="path"/> is the address it is bound to (empty
    /// for an unnamed or abstract socket). Anything else is an <see cref="IOException"/> with one line.
    /// </summary>
    public static UnixFdSocket AdoptListening(int fd, out string path)
    {
        var handle = new SafeFdHandle(fd);
        try
        {
            int type = 0, listening = 0;
            var length = (uint)sizeof(int);
            if (Interop.GetSockOpt(handle, Interop.SOL_SOCKET, Interop.SO_TYPE, &type, &length) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new IOException(errno == 88 // ENOTSOCK
                    ? $"descriptor {fd} is not a socket"
                    : $"descriptor {fd}: {Errno.Describe(errno)}");
            }
            var address = new SockAddrUn();
            var addressLength = (uint)sizeof(SockAddrUn);
            if (Interop.GetSockName(handle, &address, &addressLength) != 0)
                throw new IOException($"descriptor {fd}: getsockname failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
            if (address.Family != Interop.AF_UNIX)
                throw new IOException($"descriptor {fd} is not a Unix socket (address family {address.Family}); vhost-user needs AF_UNIX");
            if (type != Interop.SOCK_STREAM)
                throw new IOException($"descriptor {fd} is not a stream socket (type {type}); vhost-user needs SOCK_STREAM (ListenStream= in the .socket unit)");
            length = (uint)sizeof(int);
            if (Interop.GetSockOpt(handle, Interop.SOL_SOCKET, Interop.SO_ACCEPTCONN, &listening, &length) != 0 || listening == 0)
                throw new IOException($"descriptor {fd} is a Unix stream socket that is not listening");
            if (Interop.Fcntl(handle, Interop.F_SETFD, Interop.FD_CLOEXEC) != 0)
                throw new IOException($"descriptor {fd}: fcntl(F_SETFD) failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
            var pathBytes = (int)Math.Max(0, (long)addressLength - sizeof(ushort));
            var raw = new ReadOnlySpan<byte>(address.Path, Math.Min(pathBytes, SockAddrUn.PathSize));
            var end = raw.IndexOf((byte)0);
            path = raw.Length == 0 || raw[0] == 0 ? "" : Encoding.UTF8.GetString(end < 0 ? raw : raw[..end]);
            return new UnixFdSocket(handle);
        }
        catch
        {
            handle.SetHandleAsInvalid(); // not ours to close: the caller reports and exits
            throw;
        }
    }

    /// <summary>
    /// Takes ownership of <paramref name="handle"/>, a descriptor a peer passed us (SCM_RIGHTS) as one
    /// end of a connection, after checking it is an AF_UNIX stream socket; anything else is an
    /// <see cref="IOException"/> with one line and the handle stays the caller's to close.
    /// </summary>
    public static UnixFdSocket AdoptConnected(SafeFdHandle handle)
    {
        int type = 0;
        var length = (uint)sizeof(int);
        if (Interop.GetSockOpt(handle, Interop.SOL_SOCKET, Interop.SO_TYPE, &type, &length) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException(errno == 88 ? "the descriptor is not a socket" : $"the descriptor: {Errno.Describe(errno)}");
        }
        var address = new SockAddrUn();
        var addressLength = (uint)sizeof(SockAddrUn);
        if (Interop.GetSockName(handle, &address, &addressLength) != 0)
            throw new IOException($"getsockname failed: {Errno.Describe(Marshal.GetLastPInvokeError())}");
        if (address.Family != Interop.AF_UNIX)
            throw new IOException($"the descriptor is not a Unix socket (address family {address.Family})");
        if (type != Interop.SOCK_STREAM)
            throw new IOException($"the descriptor is not a stream socket (type {type})");
        return new UnixFdSocket(handle);
    }

    /// <summary>Connects to a listening socket.</summary>
    public static UnixFdSocket Connect(string path)
    {
        if (TryConnect(path, out var socket, out var errno))
            return socket!;
        throw new NativeCallException($"connect {path}", errno);
    }

    /// <summary>Connects to a listening socket; on failure returns false with errno (ECONNREFUSED: nobody listens).</summary>
    public static bool TryConnect(string path, out UnixFdSocket? socket, out int errno)
    {
        var s = NewSocket();
        var address = Address(path, out var length);
        if (Interop.Connect(s.Handle, &address, length) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            s.Dispose();
            socket = null;
            return false;
        }
        errno = 0;
        socket = s;
        return true;
    }

    /// <summary>Finds out whether <paramref name="path"/> is free, a live socket, a stale one, or something else.</summary>
    public static SocketPathState Probe(string path)
    {
        switch (FileStatus.KindOf(path))
        {
            case FileKind.Missing:
                return SocketPathState.Missing;
            case FileKind.Socket:
                if (TryConnect(path, out var probe, out var errno))
                {
                    probe!.Dispose();
                    return SocketPathState.Listening;
                }
                if (errno == Interop.ECONNREFUSED)
                    return SocketPathState.Stale;
                throw new NativeCallException($"connect {path}", errno);
            default:
                return SocketPathState.NotASocket;
        }
    }

    /// <summary>Accepts one connection (blocks; poll <see cref="Handle"/> first to wait with a timeout).</summary>
    public UnixFdSocket Accept()
    {
        while (true)
        {
            var fd = Interop.Accept4(Handle, 0, 0, Interop.SOCK_CLOEXEC);
            if (fd >= 0)
                return new UnixFdSocket(new SafeFdHandle(fd));
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Errno.EINTR)
                throw new NativeCallException("accept4", errno);
        }
    }

    /// <summary>
    /// Sends all of <paramref name="data"/>; <paramref name="fds"/> travel with the first byte.
    /// Throws <see cref="NativeCallException"/> when the peer is gone.
    /// </summary>
    public void Send(ReadOnlySpan<byte> data, ReadOnlySpan<SafeFdHandle> fds = default)
    {
        if (fds.Length > MaxSentFds)
            throw new ArgumentOutOfRangeException(nameof(fds), $"at most {MaxSentFds} descriptors per message");
        var controlSize = fds.Length == 0 ? 0 : Interop.CmsgSpace(fds.Length * sizeof(int));
        var control = stackalloc byte[Math.Max(controlSize, 1)];
        var refs = 0;
        try
        {
            if (fds.Length > 0)
            {
                new Span<byte>(control, controlSize).Clear();
                var header = (CMsgHdr*)control;
                header->Length = (nuint)(Interop.CmsgHeaderSize + fds.Length * sizeof(int));
                header->Level = Interop.SOL_SOCKET;
                header->Type = Interop.SCM_RIGHTS;
                var slots = (int*)(control + Interop.CmsgHeaderSize);
                for (var i = 0; i < fds.Length; i++, refs++)
                {
                    var added = false;
                    fds[i].DangerousAddRef(ref added);
                    slots[i] = fds[i].Fd;
                }
            }
            fixed (byte* p = data)
            {
                var sent = 0;
                do
                {
                    var iov = new IoVec((nint)(p + sent), (nuint)(data.Length - sent));
                    var message = new MsgHdr { Iov = &iov, IovLength = 1 };
                    if (sent == 0 && controlSize > 0)
                    {
                        message.Control = control;
                        message.ControlLength = (nuint)controlSize;
                    }
                    var n = Interop.SendMsg(Handle, &message, Interop.MSG_NOSIGNAL);
                    if (n < 0)
                    {
                        var errno = Marshal.GetLastPInvokeError();
                        if (errno == Errno.EINTR)
                            continue;
                        throw new NativeCallException("sendmsg", errno);
                    }
                    sent += (int)n;
                }
                while (sent < data.Length);
            }
        }
        finally
        {
            for (var i = 0; i < refs; i++)
                fds[i].DangerousRelease();
        }
    }

    /// <summary>
    /// One recvmsg: up to <paramref name="buffer"/>.Length bytes; descriptors that came with them
    /// are appended to <paramref name="fds"/>. Returns 0 when the peer closed the connection.
    /// <paramref name="fdsTruncated"/> is set when the peer sent more descriptors than fit
    /// (the kernel closed the rest).
    /// </summary>
    public int Receive(Span<byte> buffer, List<SafeFdHandle> fds, out bool fdsTruncated)
    {
        var controlSize = Interop.CmsgSpace(MaxReceivedFds * sizeof(int));
        var control = stackalloc byte[controlSize];
        fixed (byte* p = buffer)
        {
            while (true)
            {
                var iov = new IoVec((nint)p, (nuint)buffer.Length);
                var message = new MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)controlSize };
                var n = Interop.RecvMsg(Handle, &message, Interop.MSG_CMSG_CLOEXEC);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Errno.EINTR)
                        continue;
                    throw new NativeCallException("recvmsg", errno);
                }
                CollectFds(control, (int)message.ControlLength, fds);
                fdsTruncated = (message.Flags & Interop.MSG_CTRUNC) != 0;
                return (int)n;
            }
        }
    }

    /// <summary>Fills <paramref name="buffer"/> completely; false if the peer closed first.</summary>
    public bool ReceiveExactly(Span<byte> buffer, List<SafeFdHandle> fds, out bool fdsTruncated)
    {
        fdsTruncated = false;
        var done = 0;
        while (done < buffer.Length)
        {
            var n = Receive(buffer[done..], fds, out var truncated);
            fdsTruncated |= truncated;
            if (n == 0)
                return false;
            done += n;
        }
        return true;
    }

    private static void CollectFds(byte* control, int length, List<SafeFdHandle> fds)
    {
        var offset = 0;
        while (offset + Interop.CmsgHeaderSize <= length)
        {
            var header = (CMsgHdr*)(control + offset);
            var cmsgLength = (int)header->Length;
            if (cmsgLength < Interop.CmsgHeaderSize || offset + cmsgLength > length)
                break;
            if (header->Level == Interop.SOL_SOCKET && header->Type == Interop.SCM_RIGHTS)
            {
                var count = (cmsgLength - Interop.CmsgHeaderSize) / sizeof(int);
                var slots = (int*)(control + offset + Interop.CmsgHeaderSize);
                for (var i = 0; i < count; i++)
                    fds.Add(new SafeFdHandle(slots[i]));
            }
            offset += Interop.CmsgAlign(cmsgLength);
        }
    }

    /// <summary>
    /// Bounds every blocking send and receive (SO_SNDTIMEO, SO_RCVTIMEO): past it the call fails with
    /// EAGAIN instead of waiting for a peer that stopped mid-message. Zero means no bound.
    /// </summary>
    public void SetTimeouts(TimeSpan timeout)
    {
        var micros = (long)Math.Max(0, timeout.TotalMicroseconds);
        var value = new Interop.TimeVal { Seconds = micros / 1_000_000, Microseconds = micros % 1_000_000 };
        foreach (var option in (ReadOnlySpan<int>)[Interop.SO_RCVTIMEO, Interop.SO_SNDTIMEO])
        {
            if (Interop.SetSockOpt(Handle, Interop.SOL_SOCKET, option, &value, (uint)sizeof(Interop.TimeVal)) != 0)
                throw NativeCallException.FromLastError("setsockopt");
        }
    }

    /// <summary>Shuts both directions down: a blocked receive on another thread returns 0.</summary>
    public void Shutdown()
    {
        try { Interop.Shutdown(Handle, Interop.SHUT_RDWR); }
        catch (ObjectDisposedException) { }
    }

    public void Dispose() => Handle.Dispose();

    private static UnixFdSocket NewSocket() =>
        new(SafeFdHandle.FromResult(Interop.Socket(Interop.AF_UNIX, Interop.SOCK_STREAM | Interop.SOCK_CLOEXEC, 0), "socket"));

    private static SockAddrUn Address(string path, out uint length)
    {
        var bytes = Encoding.UTF8.GetByteCount(path);
        if (bytes == 0 || bytes >= SockAddrUn.PathSize)
            throw new ArgumentException($"socket path '{path}' must be 1..{SockAddrUn.PathSize - 1} bytes long");
        var address = new SockAddrUn { Family = Interop.AF_UNIX };
        Encoding.UTF8.GetBytes(path, new Span<byte>(address.Path, SockAddrUn.PathSize));
        length = (uint)(sizeof(ushort) + bytes + 1);
        return address;
    }
}
