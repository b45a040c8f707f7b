using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int SOL_SOCKET = 1;
    internal const int SCM_RIGHTS = 1;
    internal const int ENOENT = 2;
    internal const int EBADF = 9;
    internal const int EPIPE = 32;
    internal const int ECONNRESET = 104;
    internal const int ECONNREFUSED = 111;

    /// <summary>CMSG_ALIGN: control messages are aligned to the size of a pointer.</summary>
    internal static int CmsgAlign(int length) => (length + nint.Size - 1) & ~(nint.Size - 1);
    /// <summary>CMSG_SPACE for <paramref name="dataLength"/> bytes of data.</summary>
    internal static int CmsgSpace(int dataLength) => CmsgAlign(sizeof(long) * 2) + CmsgAlign(dataLength);
    internal static int CmsgHeaderSize => CmsgAlign(sizeof(long) * 2);
}

/// <summary>struct msghdr (64-bit Linux).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLength;
    public IoVec* Iov;
    public nuint IovLength;
    public void* Control;
    public nuint ControlLength;
    public int Flags;
}

/// <summary>struct cmsghdr (64-bit Linux); the data follows at <see cref="Interop.CmsgHeaderSize"/>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CMsgHdr
{
    public nuint Length;
    public int Level;
    public int Type;
}

/// <summary>struct sockaddr_un.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SockAddrUn
{
    public const int PathSize = 108;
    public ushort Family;
    public fixed byte Path[PathSize];
}

/// <summary>struct pollfd.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct PollFd
{
    public const short In = 0x1;
    public const short Out = 0x4;
    public const short Err = 0x8;
    public const short Hup = 0x10;
    public const short Invalid = 0x20;
    /// <summary>POLLRDHUP: the peer closed its end of a stream socket.</summary>
    public const short RdHup = 0x2000;

    public int Fd;
    public short Events;
    public short ReturnedEvents;

    public PollFd(int fd, short events = In)
    {
        Fd = fd;
        Events = events;
        ReturnedEvents = 0;
    }

    /// <summary>The descriptor is readable, hung up or in error (a read will not block).</summary>
    public readonly bool Ready => ReturnedEvents != 0;
}
