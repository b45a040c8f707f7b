namespace VirtioSharp.VhostUser;

/// <summary>The vhost-user peer broke the protocol, refused a request, went silent or went away.</summary>
public sealed class VhostUserException(string message, Exception? inner = null) : IOException(message, inner);
