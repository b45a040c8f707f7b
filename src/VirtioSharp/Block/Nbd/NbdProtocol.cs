namespace VirtioSharp.Block.Nbd;

/// <summary>Numbers of the NBD protocol (NBD proto.md), big-endian on the wire.</summary>
internal static class NbdProtocol
{
    // Handshake ("Fixed newstyle negotiation").
    public const ulong InitMagic = 0x4e42444d41474943;      // "NBDMAGIC"
    public const ulong OptMagic = 0x49484156454F5054;       // "IHAVEOPT"
    public const ulong OptReplyMagic = 0x3e889045565a9;
    public const ushort FlagFixedNewstyle = 1;
    public const ushort FlagNoZeroes = 2;
    public const uint ClientFlagFixedNewstyle = 1;
    public const uint ClientFlagNoZeroes = 2;

    public const uint OptAbort = 2;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;

    public const uint RepAck = 1;
    public const uint RepInfo = 3;
    public const uint RepFlagError = 1u << 31;
    public const uint RepErrUnsup = RepFlagError + 1;
    public const uint RepErrPolicy = RepFlagError + 2;
    public const uint RepErrInvalid = RepFlagError + 3;
    public const uint RepErrPlatform = RepFlagError + 4;
    public const uint RepErrTlsReqd = RepFlagError + 5;
    public const uint RepErrUnknown = RepFlagError + 6;
    public const uint RepErrShutdown = RepFlagError + 7;
    public const uint RepErrBlockSizeReqd = RepFlagError + 8;
    public const uint RepErrTooBig = RepFlagError + 9;

    public const ushort InfoExport = 0;
    public const ushort InfoBlockSize = 3;

    // Transmission flags.
    public const ushort TxHasFlags = 1 << 0;
    public const ushort TxReadOnly = 1 << 1;
    public const ushort TxSendFlush = 1 << 2;
    public const ushort TxSendFua = 1 << 3;
    public const ushort TxSendTrim = 1 << 5;
    public const ushort TxSendWriteZeroes = 1 << 6;
    public const ushort TxCanMultiConn = 1 << 8;

    // Transmission ("Request message", "Simple reply message", "Structured reply chunk message").
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;
    public const int RequestSize = 28;
    public const int SimpleReplySize = 16;
    public const int StructuredReplySize = 20;

    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdFlagFua = 1 << 0;
    public const ushort CmdFlagNoHole = 1 << 1;

    public const ushort ReplyFlagDone = 1;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeErrorBit = 1 << 15;
    public const ushort ReplyTypeError = ReplyTypeErrorBit + 1;
    public const ushort ReplyTypeErrorOffset = ReplyTypeErrorBit + 2;

    /// <summary>Largest error message a server may send (proto.md: 4096-byte string limit).</summary>
    public const int MaxMessage = 4096;

    public static string OptionError(uint reply) => reply switch
    {
        RepErrUnsup => "the option is not supported",
        RepErrPolicy => "refused by the server's policy",
        RepErrInvalid => "invalid request",
        RepErrPlatform => "not supported on the server's platform",
        RepErrTlsReqd => "the server requires TLS, which is not supported",
        RepErrUnknown => "no such export",
        RepErrShutdown => "the server is shutting down",
        RepErrBlockSizeReqd => "the server requires block size negotiation",
        RepErrTooBig => "the request is too big",
        _ => $"error 0x{reply:x}",
    };
}
