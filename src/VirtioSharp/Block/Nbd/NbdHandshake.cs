using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using static VirtioSharp.Block.Nbd.NbdProtocol;

namespace VirtioSharp.Block.Nbd;

/// <summary>What NBD_OPT_GO told us about the export.</summary>
public readonly record struct NbdExportInfo(ulong Size, ushort Flags, uint MinBlock, uint PreferredBlock, uint MaxBlock, bool Structured)
{
    public bool Has(ushort flag) => (Flags & flag) != 0;
}

/// <summary>
/// Connects to an NBD server and negotiates (proto.md, "Fixed newstyle negotiation"): structured
/// replies if the server has them, then NBD_OPT_GO with NBD_INFO_BLOCK_SIZE. Everything the
/// server sends is bounded before use. Failures throw <see cref="NbdException"/> with one line.
/// </summary>
internal static class NbdHandshake
{
    private const int MaxOptionReply = 64 * 1024;
    /// <summary>More replies than this to one option is a server that will not stop (real ones send a handful).</summary>
    private const int MaxRepliesPerOption = 32;

    public static Socket Connect(NbdUri uri, TimeSpan timeout, out NbdExportInfo info)
    {
        var socket = Open(uri, timeout);
        try
        {
            // One deadline for the whole negotiation: a server that sends a byte now and then must not keep us here.
            info = Negotiate(socket, uri, Environment.TickCount64 + (long)timeout.TotalMilliseconds);
            return socket;
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            socket.Dispose();
            throw new NbdException($"{uri}: the handshake failed: {Describe(e)}");
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static string Describe(Exception e) => e is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock }
        ? "the server did not answer in time" : e.Message;

    private static Socket Open(NbdUri uri, TimeSpan timeout)
    {
        var deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        if (!uri.IsUnix)
            return ConnectTcp(uri, timeout);
        var endpoint = new UnixDomainSocketEndPoint(uri.SocketPath!);
        var pause = 1;
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            if (TryConnect(socket, endpoint, uri, out _))
                return socket;
            // unix(7): a non-blocking connect to a listener whose accept queue is full fails with
            // EAGAIN. Nothing is in progress (the socket even polls writable while unconnected), so
            // the only answer is to try again, with a new socket: .NET does not reuse one after a
            // failed connect.
            socket.Dispose();
            var left = deadline - Environment.TickCount64;
            if (left <= 0)
                throw new NbdException($"{uri}: cannot connect: the server's accept queue stayed full");
            Thread.Sleep((int)Math.Min(pause, left));
            pause = Math.Min(pause * 2, 50);
        }
    }

    private static Socket ConnectTcp(NbdUri uri, TimeSpan timeout)
    {
        IPAddress[] addresses;
        try
        {
            addresses = IPAddress.TryParse(uri.Host, out var literal) ? [literal] : Dns.GetHostAddresses(uri.Host!);
        }
        catch (SocketException e)
        {
            throw new NbdException($"{uri}: cannot resolve '{uri.Host}': {e.Message}");
        }
        if (addresses.Length == 0)
            throw new NbdException($"{uri}: '{uri.Host}' has no address");
        var socket = new Socket(addresses[0].AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            // A TCP connect that cannot finish at once is in progress (EINPROGRESS): it is done when
            // the socket polls writable, and SO_ERROR says how it ended.
            if (!TryConnect(socket, new IPEndPoint(addresses[0], uri.Port), uri, out _))
            {
                if (!socket.Poll(timeout, SelectMode.SelectWrite))
                    throw new NbdException($"{uri}: cannot connect: no answer in time");
                var error = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!; // a SocketError
                if (error != 0)
                    throw new NbdException($"{uri}: cannot connect: {new SocketException(error).Message}");
            }
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Starts a non-blocking connect. True: connected. False: it would block (<paramref name="wouldBlock"/>
    /// true: EAGAIN, which on a Unix socket means the listener's queue is full; false: EINPROGRESS).
    /// Any other failure is one line.
    /// </summary>
    private static bool TryConnect(Socket socket, EndPoint endpoint, NbdUri uri, out bool wouldBlock)
    {
        wouldBlock = false;
        // The descriptor stays non-blocking, and every byte of the handshake goes through our own
        // sendmsg/recvmsg and poll(2) (SendExact, ReadExact): none through the Socket's Send or
        // Receive. Once .NET has made a descriptor non-blocking, a blocking Socket call on it (or
        // one with a timeout, or ConnectAsync) registers it with .NET's epoll thread for good; that
        // thread then woke for every batch of replies our receiver read and handed each to the
        // thread pool, whose workers spun in sched_yield: more CPU than the requests themselves.
        socket.Blocking = false;
        try
        {
            socket.Connect(endpoint);
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
        {
            wouldBlock = e.SocketErrorCode == SocketError.WouldBlock;
            return false;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new NbdException($"{uri}: cannot connect: {e.Message}");
        }
    }

    private static NbdExportInfo Negotiate(Socket s, NbdUri uri, long deadline)
    {
        Span<byte> hello = stackalloc byte[18];
        ReadExact(s, hello, deadline);
        if (BinaryPrimitives.ReadUInt64BigEndian(hello) != InitMagic)
            throw new NbdException($"{uri}: not an NBD server (bad greeting)");
        if (BinaryPrimitives.ReadUInt64BigEndian(hello[8..]) != OptMagic)
            throw new NbdException($"{uri}: the server speaks only the old NBD handshake; fixed newstyle is required");
        var serverFlags = BinaryPrimitives.ReadUInt16BigEndian(hello[16..]);
        if ((serverFlags & FlagFixedNewstyle) == 0)
            throw new NbdException($"{uri}: the server does not offer fixed newstyle negotiation");
        var noZeroes = (serverFlags & FlagNoZeroes) != 0;
        Span<byte> clientFlags = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(clientFlags, ClientFlagFixedNewstyle | (noZeroes ? ClientFlagNoZeroes : 0));
        SendExact(s, clientFlags, deadline);

        // NBD_OPT_STRUCTURED_REPLY: ACK turns them on; an error leaves simple replies.
        SendOption(s, OptStructuredReply, [], deadline);
        var structured = false;
        for (var replies = 1; ; replies++)
        {
            var (type, payload) = ReadOptionReply(s, OptStructuredReply, uri, deadline, replies);
            if (type == RepAck)
            {
                structured = true;
                break;
            }
            if ((type & RepFlagError) != 0)
                break;
            // Any other reply to this option is not one we asked for; skip it.
            _ = payload;
        }

        // NBD_OPT_GO: export name, and one information request (NBD_INFO_BLOCK_SIZE).
        var name = Encoding.UTF8.GetBytes(uri.Export);
        var go = new byte[4 + name.Length + 2 + 2];
        BinaryPrimitives.WriteUInt32BigEndian(go, (uint)name.Length);
        name.CopyTo(go, 4);
        BinaryPrimitives.WriteUInt16BigEndian(go.AsSpan(4 + name.Length), 1);
        BinaryPrimitives.WriteUInt16BigEndian(go.AsSpan(6 + name.Length), InfoBlockSize);
        SendOption(s, OptGo, go, deadline);
        ulong? size = null;
        ushort flags = 0;
        uint min = 1, preferred = 4096, max = 32 << 20;
        for (var replies = 1; ; replies++)
        {
            var (type, payload) = ReadOptionReply(s, OptGo, uri, deadline, replies);
            if (type == RepAck)
                break;
            if ((type & RepFlagError) != 0)
            {
                var message = payload.Length > 0 ? ": " + Printable(payload) : "";
                throw new NbdException($"{uri}: the server refused export '{uri.Export}': {OptionError(type)}{message}");
            }
            if (type != RepInfo || payload.Length < 2)
                continue;
            var info = BinaryPrimitives.ReadUInt16BigEndian(payload);
            if (info == InfoExport && payload.Length == 12)
            {
                size = BinaryPrimitives.ReadUInt64BigEndian(payload.AsSpan(2));
                flags = BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(10));
            }
            else if (info == InfoBlockSize && payload.Length == 14)
            {
                min = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(2));
                preferred = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(6));
                max = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(10));
            }
        }
        if (size is null)
            throw new NbdException($"{uri}: the server ended NBD_OPT_GO without the export's size");
        // Offsets are signed 64-bit numbers in Linux, QEMU and our file backends: larger is not a disk.
        if (size.Value > long.MaxValue)
            throw new NbdException($"{uri}: the server reports an export of {size.Value} bytes, more than 2^63 - 1");
        // proto.md "Block size constraints": powers of two, min <= 64 KiB, min <= preferred <= max.
        if (min == 0 || (min & (min - 1)) != 0 || min > 65536 || preferred < min || (preferred & (preferred - 1)) != 0 || max < preferred)
            throw new NbdException($"{uri}: the server sent impossible block sizes (min {min}, preferred {preferred}, max {max})");
        if (min > BlkLayout.SectorSize && min > 4096)
            throw new NbdException($"{uri}: the export's minimum block size {min} is larger than 4096");
        if (max < BlkLayout.SectorSize)
            throw new NbdException($"{uri}: the server's largest request ({max} bytes) is smaller than a 512-byte sector");
        return new NbdExportInfo(size.Value, flags, min, preferred, max, structured);
    }

    private static void SendOption(Socket s, uint option, ReadOnlySpan<byte> data, long deadline)
    {
        var m = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(m, OptMagic);
        BinaryPrimitives.WriteUInt32BigEndian(m.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(m.AsSpan(12), (uint)data.Length);
        data.CopyTo(m.AsSpan(16));
        SendExact(s, m, deadline);
    }

    private static (uint Type, byte[] Payload) ReadOptionReply(Socket s, uint option, NbdUri uri, long deadline, int replies)
    {
        if (replies > MaxRepliesPerOption)
            throw new NbdException($"{uri}: the server broke the handshake (more than {MaxRepliesPerOption} replies to one option)");
        Span<byte> h = stackalloc byte[20];
        ReadExact(s, h, deadline);
        if (BinaryPrimitives.ReadUInt64BigEndian(h) != OptReplyMagic)
            throw new NbdException($"{uri}: the server broke the handshake (bad option reply magic)");
        if (BinaryPrimitives.ReadUInt32BigEndian(h[8..]) != option)
            throw new NbdException($"{uri}: the server broke the handshake (a reply to an option we did not send)");
        var type = BinaryPrimitives.ReadUInt32BigEndian(h[12..]);
        var length = BinaryPrimitives.ReadUInt32BigEndian(h[16..]);
        if (length > MaxOptionReply)
            throw new NbdException($"{uri}: the server broke the handshake (an option reply of {length} bytes)");
        var payload = new byte[length];
        ReadExact(s, payload, deadline);
        return (type, payload);
    }

    /// <summary>Fills <paramref name="buffer"/> before <paramref name="deadline"/> (Environment.TickCount64) or throws.</summary>
    private static unsafe void ReadExact(Socket s, Span<byte> buffer, long deadline)
    {
        while (buffer.Length > 0)
        {
            nint n;
            fixed (byte* p = buffer)
            {
                var iov = new IoVec((nint)p, (nuint)buffer.Length);
                var msg = new MsgHdr { Iov = &iov, IovLength = 1 };
                n = Interop.RecvMsg(s.SafeHandle, &msg, Interop.MSG_DONTWAIT);
            }
            if (n == 0)
                throw new IOException("the server closed the connection");
            if (n < 0)
                Await(s, PollFd.In, Marshal.GetLastPInvokeError(), deadline);
            else
                buffer = buffer[(int)n..];
        }
    }

    /// <summary>Sends all of <paramref name="data"/> before <paramref name="deadline"/> or throws.</summary>
    private static unsafe void SendExact(Socket s, ReadOnlySpan<byte> data, long deadline)
    {
        while (data.Length > 0)
        {
            nint n;
            fixed (byte* p = data)
            {
                var iov = new IoVec((nint)p, (nuint)data.Length);
                var msg = new MsgHdr { Iov = &iov, IovLength = 1 };
                n = Interop.SendMsg(s.SafeHandle, &msg, Interop.MSG_DONTWAIT | Interop.MSG_NOSIGNAL);
            }
            if (n < 0)
                Await(s, PollFd.Out, Marshal.GetLastPInvokeError(), deadline);
            else
                data = data[(int)n..];
        }
    }

    /// <summary>After a failed non-blocking call: waits (poll) until the socket is ready or the deadline passes; throws for a real error.</summary>
    private static void Await(Socket s, short events, int errno, long deadline)
    {
        if (errno == Errno.EINTR)
            return;
        // A send after the server hung up fails with EPIPE, a read may see ECONNRESET: the same
        // event as a read of 0 bytes, and said the same way.
        if (errno is Errno.EPIPE or Errno.ECONNRESET)
            throw new IOException("the server closed the connection");
        if (errno != Errno.EAGAIN)
            throw new IOException(Errno.Describe(errno));
        var left = deadline - Environment.TickCount64;
        if (left <= 0)
            throw new SocketException((int)SocketError.TimedOut);
        var added = false;
        try
        {
            s.SafeHandle.DangerousAddRef(ref added);
            Span<PollFd> set = [new PollFd((int)s.SafeHandle.DangerousGetHandle(), events)];
            FdPoll.Wait(set, (int)Math.Min(left, int.MaxValue));
        }
        finally
        {
            if (added)
                s.SafeHandle.DangerousRelease();
        }
    }

    private static string Printable(byte[] text)
    {
        var s = Encoding.UTF8.GetString(text, 0, Math.Min(text.Length, MaxMessage));
        var sb = new StringBuilder(s.Length);
        foreach (var c in s)
            sb.Append(char.IsControl(c) ? ' ' : c);
        return sb.ToString().Trim();
    }
}

/// <summary>An NBD server could not be reached or used; the message is one line for the user.</summary>
public sealed class NbdException(string message) : IOException(message);
