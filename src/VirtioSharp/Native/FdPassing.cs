using System.Runtime.InteropServices;
using VirtioSharp.Block;

namespace VirtioSharp.Native;

/// <summary>
/// Messages over a Unix stream socket with file descriptors attached (SCM_RIGHTS, unix(7)).
/// Works on any socket handle (a <see cref="System.Net.Sockets.Socket"/>'s SafeHandle or our own).
/// </summary>
internal static unsafe class FdPassing
{
    /// <summary>Most descriptors one message may carry (vhost-user sends at most 8 memory regions).</summary>
    public const int MaxFds = 8;

    /// <summary>Sends all of <paramref name="data"/>; <paramref name="fds"/> ride on the first byte. Throws <see cref="IOException"/> on failure.</summary>
    public static void Send(SafeHandle socket, ReadOnlySpan<byte> data, ReadOnlySpan<int> fds = default)
    {
        if (fds.Length > MaxFds)
            throw new ArgumentException($"at most {MaxFds} file descriptors per message", nameof(fds));
        var control = stackalloc byte[Interop.CmsgSpace(MaxFds * sizeof(int))];
        var sent = 0;
        fixed (byte* p = data)
        {
            while (sent < data.Length || (sent == 0 && data.Length == 0))
            {
                var iov = new IoVec((nint)(p + sent), (nuint)(data.Length - sent));
                var msg = new Interop.MsgHdr { Iov = &iov, IovLength = 1 };
                if (sent == 0 && fds.Length > 0)
                {
                    var space = Interop.CmsgSpace(fds.Length * sizeof(int));
                    new Span<byte>(control, space).Clear();
                    var cmsg = (Interop.CmsgHdr*)control;
                    cmsg->Length = (nuint)Interop.CmsgLen(fds.Length * sizeof(int));
                    cmsg->Level = Interop.SOL_SOCKET;
                    cmsg->Type = Interop.SCM_RIGHTS;
                    fds.CopyTo(new Span<int>(control + Interop.CmsgDataOffset, fds.Length));
                    msg.Control = control;
                    msg.ControlLength = (nuint)space;
                }
                var n = Interop.SendMsg(socket, &msg, Interop.MSG_NOSIGNAL);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Errno.EINTR)
                        continue;
                    throw new IOException($"sendmsg failed: {Errno.Describe(errno)}");
                }
                sent += (int)n;
                if (data.Length == 0)
                    break;
            }
        }
    }

    /// <summary>
    /// Receives up to <paramref name="buffer"/>.Length bytes (at least one unless the peer closed) and
    /// any descriptors that came with them, which are appended to <paramref name="fds"/> (owned by the caller).
    /// Returns 0 when the peer closed the connection. Throws <see cref="IOException"/> on failure.
    /// </summary>
    public static int Receive(SafeHandle socket, Span<byte> buffer, List<SafeFdHandle>? fds)
    {
        var controlSize = Interop.CmsgSpace(MaxFds * sizeof(int));
        var control = stackalloc byte[controlSize];
        fixed (byte* p = buffer)
        {
            while (true)
            {
                var iov = new IoVec((nint)p, (nuint)buffer.Length);
                var msg = new Interop.MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)controlSize };
                var n = Interop.RecvMsg(socket, &msg, Interop.MSG_CMSG_CLOEXEC);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Errno.EINTR)
                        continue;
                    throw new IOException($"recvmsg failed: {Errno.Describe(errno)}");
                }
                TakeDescriptors(&msg, fds);
                if ((msg.Flags & Interop.MSG_CTRUNC) != 0)
                    throw new IOException($"peer sent more than {MaxFds} file descriptors with one message");
                return (int)n;
            }
        }
    }

    private static void TakeDescriptors(Interop.MsgHdr* msg, List<SafeFdHandle>? fds)
    {
        var offset = 0;
        var control = (byte*)msg->Control;
        var length = (int)msg->ControlLength;
        while (offset + sizeof(Interop.CmsgHdr) <= length)
        {
            var cmsg = (Interop.CmsgHdr*)(control + offset);
            var cmsgLen = (int)cmsg->Length;
            if (cmsgLen < sizeof(Interop.CmsgHdr) || offset + cmsgLen > length)
                break;
            if (cmsg->Level == Interop.SOL_SOCKET && cmsg->Type == Interop.SCM_RIGHTS)
            {
                var count = (cmsgLen - Interop.CmsgDataOffset) / sizeof(int);
                var data = (int*)((byte*)cmsg + Interop.CmsgDataOffset);
                for (var i = 0; i < count; i++)
                {
                    var handle = new SafeFdHandle(data[i]);
                    if (fds is null)
                        handle.Dispose(); // nobody wants it: never leak a descriptor
                    else
                        fds.Add(handle);
                }
            }
            offset += Interop.CmsgAlign(cmsgLen);
        }
    }
}
