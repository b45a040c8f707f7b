using System.Runtime.InteropServices;

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>
/// The 12-byte message header (vhost-user.rst, "Header"): request, flags, payload size, all
/// 32-bit in the machine's byte order.
/// </summary>
public readonly record struct VhostUserHeader(VhostUserRequest Request, uint Flags, uint Size)
{
    public const int Length = 12;
    /// <summary>Lower two bits: the protocol version, currently 1.</summary>
    public const uint VersionMask = 0x3;
    public const uint Version = 0x1;
    /// <summary>Bit 2: set on every reply from the back-end.</summary>
    public const uint ReplyFlag = 0x4;
    /// <summary>Bit 3: the sender wants a REPLY_ACK answer.</summary>
    public const uint NeedReplyFlag = 0x8;
    /// <summary>The largest payload either side of this project sends or accepts.</summary>
    public const int MaxPayload = 4096;

    public bool IsReply => (Flags & ReplyFlag) != 0;
    public bool NeedReply => (Flags & NeedReplyFlag) != 0;
    public uint ProtocolVersion => Flags & VersionMask;

    public static VhostUserHeader Read(ReadOnlySpan<byte> b) => new(
        (VhostUserRequest)MemoryMarshal.Read<uint>(b),
        MemoryMarshal.Read<uint>(b[4..]),
        MemoryMarshal.Read<uint>(b[8..]));

    public void Write(Span<byte> b)
    {
        var request = (uint)Request;
        var flags = Flags;
        var size = Size;
        MemoryMarshal.Write(b, in request);
        MemoryMarshal.Write(b[4..], in flags);
        MemoryMarshal.Write(b[8..], in size);
    }

    /// <summary>A request from the front-end.</summary>
    public static VhostUserHeader ForRequest(VhostUserRequest request, int size, bool needReply = false) =>
        new(request, Version | (needReply ? NeedReplyFlag : 0), (uint)size);

    /// <summary>A request from the back-end, on the channel of VHOST_USER_SET_BACKEND_REQ_FD (same header, its own numbers).</summary>
    public static VhostUserHeader ForBackendRequest(VhostUserBackendRequest request, int size, bool needReply = false) =>
        new((VhostUserRequest)(uint)request, Version | (needReply ? NeedReplyFlag : 0), (uint)size);

    /// <summary>The request field read as a back-end message type (on the back-end's channel).</summary>
    public VhostUserBackendRequest BackendRequest => (VhostUserBackendRequest)(uint)Request;

    /// <summary>The back-end's reply to <paramref name="request"/>.</summary>
    public static VhostUserHeader ForReply(VhostUserRequest request, int size) => new(request, Version | ReplyFlag, (uint)size);

    public override string ToString() => $"{Request.SpecName()} flags 0x{Flags:x} size {Size}";
}
