using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    internal const int SOL_SOCKET = 1;
    internal const int SCM_RIGHTS = 1;
    internal const int MSG_CTRUNC = 0x8;
    internal const int MSG_DONTWAIT = 0x40;
    internal const int MSG_NOSIGNAL = 0x4000;
    internal const int MSG_CMSG_CLOEXEC = 0x40000000;

    /// <summary>struct msghdr (64-bit Linux).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public Block.IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    /// <summary>struct cmsghdr; the data follows at <see cref="CmsgDataOffset"/>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct CmsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    internal static int CmsgAlign(int length) => (length + nint.Size - 1) & ~(nint.Size - 1);
    internal static unsafe int CmsgDataOffset => CmsgAlign(sizeof(CmsgHdr));
    /// <summary>CMSG_SPACE: control buffer bytes for <paramref name="dataLength"/> bytes of data.</summary>
    internal static int CmsgSpace(int dataLength) => CmsgDataOffset + CmsgAlign(dataLength);
    /// <summary>CMSG_LEN: the cmsg_len value for <paramref name="dataLength"/> bytes of data.</summary>
    internal static int CmsgLen(int dataLength) => CmsgDataOffset + dataLength;

    /// <summary>sendmsg(2): a message, optionally with file descriptors as SCM_RIGHTS ancillary data.</summary>
    [LibraryImport(Libc, EntryPoint = "sendmsg", SetLastError = true)]
    internal static unsafe partial nint SendMsg(SafeHandle socket, MsgHdr* message, int flags);
}
