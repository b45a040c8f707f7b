using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>The device's config space (GET_CONFIG, SET_CONFIG).</summary>
internal sealed partial class VhostUserSession
{
    private Verdict GetConfig(ReadOnlySpan<byte> p)
    {
        if (!TryConfigHeader(p, out var cfg))
        {
            // vhost-user.rst, GET_CONFIG: an empty payload tells the front-end it failed.
            _log.Warn($"VHOST_USER_GET_CONFIG refused: {_why}");
            _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetConfig, 0), default);
            return Verdict.Done;
        }
        Span<byte> reply = stackalloc byte[ConfigSpaceHeader.Length + (int)cfg.Size];
        cfg.Write(reply);
        _device.ReadConfig((int)cfg.Offset, reply[ConfigSpaceHeader.Length..]);
        _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetConfig, reply.Length), reply);
        return Verdict.Done;
    }

    private Verdict SetConfig(ReadOnlySpan<byte> p)
    {
        if (!TryConfigHeader(p, out var cfg))
            return Verdict.Failed;
        _device.WriteConfig((int)cfg.Offset, p.Slice(ConfigSpaceHeader.Length, (int)cfg.Size));
        return Verdict.Done;
    }

    private bool TryConfigHeader(ReadOnlySpan<byte> p, out ConfigSpaceHeader cfg)
    {
        cfg = default;
        if (p.Length < ConfigSpaceHeader.Length)
        {
            _why = $"payload is {p.Length} bytes, shorter than the {ConfigSpaceHeader.Length}-byte config header";
            return false;
        }
        cfg = ConfigSpaceHeader.Read(p);
        if (cfg.Size > ConfigSpaceHeader.MaxConfigSize || cfg.Offset > ConfigSpaceHeader.MaxConfigSize - cfg.Size)
        {
            _why = $"config range {cfg.Offset}+{cfg.Size} exceeds the {ConfigSpaceHeader.MaxConfigSize}-byte config space";
            return false;
        }
        if (p.Length != ConfigSpaceHeader.Length + cfg.Size)
        {
            _why = $"payload is {p.Length} bytes, expected {ConfigSpaceHeader.Length + cfg.Size} for {cfg.Size} config bytes";
            return false;
        }
        return true;
    }
}
