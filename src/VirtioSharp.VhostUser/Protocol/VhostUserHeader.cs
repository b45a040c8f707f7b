using System.Buffers.Binary;

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>The message header: request, flags, payload size (all numbers in host byte order, little-endian here).</summary>
public readonly record struct VhostUserHeader(uint Request, VhostUserFlags Flags, uint Size)
{
    public VhostUserRequest RequestCode => (VhostUserRequest)Request;
    public bool IsReply => (Flags & VhostUserFlags.Reply) != 0;
    public bool NeedsReply => (Flags & VhostUserFlags.NeedReply) != 0;
    public uint Version => (uint)(Flags & VhostUserFlags.VersionMask);

    public static VhostUserHeader Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b),
        (VhostUserFlags)BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[8..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Request);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], (uint)Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], Size);
    }
}
